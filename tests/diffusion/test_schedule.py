"""NoiseSchedule and DiffusionConfig: betas and q(z_t | z_0) against diffusers, closed forms, lookups."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, EulerDiscreteScheduler
from diffusion_toys import schedule_for

from latentdiff.config import ConfigError, from_dict
from latentdiff.diffusion import DiffusionConfig, NoiseSchedule, make_schedule

DIFFUSERS_SCHEDULE = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}


@pytest.mark.parametrize("zero_snr", [False, True])
@pytest.mark.parametrize("kind", ["linear", "scaled_linear", "cosine"])
def test_betas_and_alphas_cumprod_match_diffusers(kind, zero_snr):
    cfg = DiffusionConfig(schedule=kind, beta_start=0.00085, beta_end=0.012, zero_terminal_snr=zero_snr)
    ours = make_schedule(cfg)
    ref = DDPMScheduler(
        beta_schedule=DIFFUSERS_SCHEDULE[kind],
        beta_start=0.00085,
        beta_end=0.012,
        rescale_betas_zero_snr=zero_snr,
    )
    # diffusers builds its tables in float32: agreement is to float32 precision.
    torch.testing.assert_close(ours.betas, ref.betas.double(), atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(ours.alphas_cumprod, ref.alphas_cumprod.double(), atol=2e-6, rtol=1e-5)


def test_default_config_is_the_ddpm_linear_schedule():
    ours = make_schedule(DiffusionConfig())
    ref = DDPMScheduler()
    assert ours.num_timesteps == 1000
    torch.testing.assert_close(ours.betas, ref.betas.double(), atol=1e-9, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_add_noise_matches_diffusers(dtype):
    sched = schedule_for()
    ref = DDPMScheduler()
    ref.alphas_cumprod = sched.alphas_cumprod.clone()
    g = torch.Generator().manual_seed(0)
    z0, noise = (torch.randn(8, 3, 4, 4, generator=g, dtype=dtype) for _ in range(2))
    t = torch.tensor([0, 1, 10, 250, 500, 777, 998, 999])
    out = sched.add_noise(z0, noise, t)
    assert out.dtype == dtype
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    torch.testing.assert_close(out, ref.add_noise(z0, noise, t), atol=tol, rtol=tol)


def test_add_noise_is_the_closed_form_for_every_t_and_keeps_bf16():
    sched = schedule_for("scaled_linear", beta_start=0.00085, beta_end=0.012)
    t = torch.arange(sched.num_timesteps)
    z0, noise = torch.randn(len(t), 2, dtype=torch.float64), torch.randn(len(t), 2, dtype=torch.float64)
    ab = torch.cumprod(1 - sched.betas, 0)[:, None]
    torch.testing.assert_close(sched.add_noise(z0, noise, t), ab.sqrt() * z0 + (1 - ab).sqrt() * noise)
    assert sched.add_noise(z0.bfloat16(), noise.bfloat16(), t).dtype == torch.bfloat16


def test_cosine_schedule_closed_form():
    """Nichol & Dhariwal 2021, eq. 17: ᾱ_t = f(t+1)/f(0) while no beta is clipped; the last is, at 0.999."""
    T, s = 1000, 0.008
    sched = make_schedule(DiffusionConfig(schedule="cosine", num_timesteps=T))

    def f(tau):
        return math.cos((tau / T + s) / (1 + s) * math.pi / 2) ** 2

    clipped = sched.betas >= 0.999
    assert clipped.tolist() == [False] * (T - 1) + [True]
    expected = torch.tensor([f(t + 1) / f(0) for t in range(T - 1)], dtype=torch.float64)
    torch.testing.assert_close(sched.alphas_cumprod[:-1], expected, atol=1e-13, rtol=1e-10)
    assert sched.betas[-1].item() == pytest.approx(0.999)


@pytest.mark.parametrize("kind", ["linear", "scaled_linear", "cosine"])
def test_zero_terminal_snr_zeroes_the_last_alpha_and_keeps_the_first(kind):
    plain = make_schedule(DiffusionConfig(schedule=kind))
    rescaled = make_schedule(DiffusionConfig(schedule=kind, zero_terminal_snr=True))
    assert rescaled.alphas_cumprod[-1].item() == 0.0
    assert rescaled.snr(rescaled.num_timesteps - 1).item() == 0.0
    assert rescaled.alphas_cumprod[0].item() == pytest.approx(plain.alphas_cumprod[0].item(), rel=1e-12)
    assert (rescaled.alphas_cumprod[1:] < rescaled.alphas_cumprod[:-1]).all()
    # Lin et al. 2024, Algorithm 1 is an affine map of sqrt(ᾱ): check it against the original schedule.
    a, b = plain.alphas_cumprod.sqrt(), rescaled.alphas_cumprod.sqrt()
    torch.testing.assert_close(b, (a - a[-1]) * a[0] / (a[0] - a[-1]), atol=1e-12, rtol=1e-10)
    assert torch.isfinite(rescaled.sigmas).all()


def test_snr_and_alpha_sigma_closed_form():
    sched = schedule_for()
    t = torch.arange(1000)
    ab = sched.alphas_cumprod
    alpha, sigma = sched.alpha_sigma(t)
    torch.testing.assert_close(alpha, ab.sqrt())
    torch.testing.assert_close(sigma, (1 - ab).sqrt())
    torch.testing.assert_close(sched.snr(t), ab / (1 - ab))
    torch.testing.assert_close(sched.sigmas, ((1 - ab) / ab).sqrt())


def test_fractional_timesteps_interpolate_log_sigma_and_invert_sigma_to_t():
    sched = schedule_for()
    # integer-valued floats are exact lookups
    t_int = torch.tensor([0, 5, 500, 999])
    assert torch.equal(sched.alphas_cumprod_at(t_int.double()), sched.alphas_cumprod_at(t_int))
    # fractional t: log σ linear between neighbours
    t = torch.tensor([0.25, 17.5, 500.9, 998.01], dtype=torch.float64)
    lo, w = t.floor().long(), t - t.floor()
    log_sigma = (1 - w) * sched.sigmas[lo].log() + w * sched.sigmas[lo + 1].log()
    alpha, sigma = sched.alpha_sigma(t)
    torch.testing.assert_close(sigma / alpha, log_sigma.exp(), atol=0, rtol=1e-12)
    # sigma_to_t inverts it, and agrees with diffusers' _sigma_to_t
    torch.testing.assert_close(sched.sigma_to_t(sigma / alpha), t, atol=1e-9, rtol=0)
    ref = EulerDiscreteScheduler()
    log_sigmas = np.log(sched.sigmas.numpy())
    probe = np.array([0.005, 0.0123, 0.5, 3.0, 80.0, 157.0, 400.0])
    expected = ref._sigma_to_t(probe, log_sigmas)
    torch.testing.assert_close(sched.sigma_to_t(torch.from_numpy(probe)), torch.from_numpy(expected))


def test_timestep_minus_one_is_clean_data():
    sched = schedule_for()
    z0, noise = torch.randn(2, 3), torch.randn(2, 3)
    assert torch.equal(sched.add_noise(z0, noise, torch.tensor([-1, -1])), z0)
    assert torch.equal(sched.add_noise(z0, noise, torch.tensor([-1.0, -1.0])), z0)


def test_fractional_lookup_returns_the_dtype_of_t():
    sched = schedule_for()
    alpha, sigma = sched.alpha_sigma(torch.tensor([10.5, 900.25]))
    assert alpha.dtype == sigma.dtype == torch.float32
    assert sched.alpha_sigma(torch.tensor([3]))[0].dtype == torch.float64


def test_bad_timesteps_and_shapes_raise():
    sched = schedule_for()
    z0 = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"\[0, 999\]"):
        sched.add_noise(z0, z0, torch.tensor([0, 1000]))
    with pytest.raises(ValueError, match=r"\[0, 999\]"):
        sched.alpha_sigma(torch.tensor([-0.5]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        sched.add_noise(z0, z0, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="same shape"):
        sched.add_noise(z0, torch.zeros(2, 4), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="non-increasing"):
        NoiseSchedule(torch.tensor([0.5, 0.9]))


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="prediction"):
        from_dict(DiffusionConfig, {"prediction": "epsilon"})
    with pytest.raises(ConfigError, match="Did you mean 'num_timesteps'"):
        from_dict(DiffusionConfig, {"num_timestep": 10})
    with pytest.raises(ConfigError, match="beta_start"):
        from_dict(DiffusionConfig, {"beta_start": 0.1, "beta_end": 0.01})
    with pytest.raises(ValueError, match="min_snr_gamma"):
        DiffusionConfig(min_snr_gamma=0.0)
