"""Training noise-level distributions: uniform timesteps, EDM's log-normal σ, SD3's logit-normal t."""

from __future__ import annotations

import pytest
import torch
from diffusion_toys import schedule_for

from latentdiff.diffusion import DiffusionConfig, levels_at_timesteps, sample_noise_levels


class Draws:
    """The per-sample draws training's BatchRandom makes, from a plain generator (n samples)."""

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.g = n, torch.Generator().manual_seed(seed)

    def randint(self, low: int, high: int) -> torch.Tensor:
        return torch.randint(low, high, (self.n,), generator=self.g)

    def randn(self) -> torch.Tensor:
        return torch.randn(self.n, generator=self.g)


def test_uniform_draws_integer_timesteps_exactly_as_the_table():
    sched = schedule_for()
    levels = sample_noise_levels(DiffusionConfig(), sched, Draws(4000))
    assert levels.t.dtype == torch.int64 and levels.t.min() >= 0 and levels.t.max() <= 999
    assert torch.equal(levels.alphas_cumprod, sched.alphas_cumprod[levels.t])
    assert abs(levels.t.double().mean().item() - 499.5) < 15  # U{0..999}: mean 499.5, sd of mean ≈ 4.6


def test_log_normal_sigma_has_edm_moments():
    cfg = DiffusionConfig(prediction="edm", noise_sampling="log_normal")
    levels = sample_noise_levels(cfg, schedule_for(), Draws(20000))
    log_sigma = levels.sigma.log()
    assert levels.t is None
    assert log_sigma.mean().item() == pytest.approx(-1.2, abs=0.03)  # Karras et al. 2022, Table 1
    assert log_sigma.std().item() == pytest.approx(1.2, abs=0.03)
    cfg = DiffusionConfig(prediction="edm", noise_sampling="log_normal", noise_mean=0.5, noise_std=0.1)
    assert sample_noise_levels(cfg, schedule_for(), Draws(20000)).sigma.log().mean().item() == pytest.approx(
        0.5, abs=0.01
    )


def test_log_normal_on_a_vp_model_stays_on_its_timesteps():
    """A VP network only knows the schedule's noise levels: σ is clipped to them and t is σ's timestep."""
    sched = schedule_for()
    cfg = DiffusionConfig(prediction="eps", noise_sampling="log_normal", noise_std=4.0)
    levels = sample_noise_levels(cfg, sched, Draws(5000))
    lo, hi = sched.sigmas[0].item(), sched.sigmas[-1].item()
    assert levels.sigma.min() >= lo * (1 - 1e-9) and levels.sigma.max() <= hi * (1 + 1e-9)
    for end in (lo, hi):  # both ends reached with sd 4
        assert torch.isclose(levels.sigma, torch.tensor(end, dtype=torch.float64), rtol=1e-9).any()
    back = levels_at_timesteps(sched, levels.t)  # the fractional t sees exactly this σ
    torch.testing.assert_close(back.sigma, levels.sigma, rtol=1e-9, atol=0)


def test_logit_normal_timesteps_are_sigmoid_of_a_normal():
    sched = schedule_for()
    cfg = DiffusionConfig(noise_sampling="logit_normal")
    levels = sample_noise_levels(cfg, sched, Draws(20000, seed=3))
    u = torch.logit(levels.t / 999)
    assert levels.t.dtype == torch.float64
    assert u.mean().item() == pytest.approx(0.0, abs=0.03) and u.std().item() == pytest.approx(1.0, abs=0.03)
    torch.testing.assert_close(levels.alphas_cumprod, sched.alphas_cumprod_at(levels.t))


def test_settings_that_do_nothing_are_refused():
    with pytest.raises(ValueError, match="noise_mean/noise_std apply to"):
        DiffusionConfig(noise_mean=0.3)
    with pytest.raises(ValueError, match="sigma_data is used by"):
        DiffusionConfig(sigma_data=0.5)
    with pytest.raises(ValueError, match="noise_sampling='gamma' is not one of"):
        DiffusionConfig(noise_sampling="gamma")
