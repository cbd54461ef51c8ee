"""σ-space preconditioning (Karras et al. 2022, Table 1) against closed forms, in both scales."""

from __future__ import annotations

import math

import pytest
import torch
from diffusion_toys import schedule_for

from latentdiff.diffusion import SAMPLERS, NoiseLevels, Preconditioning, levels_at_sigmas, levels_at_timesteps

SIGMAS = torch.tensor([0.002, 0.05, 0.5, 1.0, 3.0, 80.0], dtype=torch.float64)


@pytest.mark.parametrize("sigma_data", [0.5, 1.0])
def test_edm_coefficients_are_table_1(sigma_data):
    c_skip, c_out, c_in = Preconditioning("edm", sigma_data).coefficients(SIGMAS)
    for s, skip, out, cin in zip(SIGMAS.tolist(), c_skip, c_out, c_in, strict=True):
        d = sigma_data
        assert skip.item() == pytest.approx(d**2 / (s**2 + d**2), rel=1e-14)
        assert out.item() == pytest.approx(s * d / math.sqrt(s**2 + d**2), rel=1e-14)
        assert cin.item() == pytest.approx(1 / math.sqrt(s**2 + d**2), rel=1e-14)
    levels = levels_at_sigmas(SIGMAS)
    torch.testing.assert_close(Preconditioning("edm").c_noise(levels, schedule_for()), SIGMAS.log() / 4)


def test_vp_parametrisations_are_instances():
    """ε: D = x − σF; v: D = x/(1+σ²) − σF/sqrt(1+σ²); x0: D = F; all with c_in = 1/sqrt(1+σ²)."""
    s = SIGMAS
    vp_in = 1 / (1 + s**2).sqrt()
    expected = {
        "eps": (torch.ones_like(s), -s, vp_in),
        "v": (1 / (1 + s**2), -s * vp_in, vp_in),
        "x0": (torch.zeros_like(s), torch.ones_like(s), vp_in),
    }
    for kind, coeffs in expected.items():
        for got, want in zip(Preconditioning(kind).coefficients(s), coeffs, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-14, atol=0)


@pytest.mark.parametrize("kind", ["eps", "v", "x0", "edm"])
def test_vp_scale_evaluation_equals_the_sigma_space_definition(kind):
    """x̂0 from x_t = α x_σ in VP scale equals c_skip x_σ + c_out F(c_in x_σ), and ε̂ = (x_σ − x̂0)/σ."""
    g = torch.Generator().manual_seed(0)
    pre = Preconditioning(kind, 0.5 if kind == "edm" else 1.0)
    levels = levels_at_sigmas(SIGMAS)
    x_sigma = torch.randn(len(SIGMAS), 3, 4, 4, generator=g, dtype=torch.float64) * 2
    out = torch.randn(x_sigma.shape, generator=g, dtype=torch.float64)
    shape = (-1, 1, 1, 1)
    x_t = x_sigma * levels.alpha.reshape(shape)
    scale = pre.input_scale(levels)
    c_skip, c_out, c_in = (c.reshape(shape) for c in pre.coefficients(SIGMAS))
    x_in = x_t if scale is None else x_t * scale.reshape(shape)
    torch.testing.assert_close(x_in, c_in * x_sigma, rtol=1e-12, atol=1e-12)
    x0, eps = pre.denoised(out, x_t, levels)
    torch.testing.assert_close(x0, c_skip * x_sigma + c_out * out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(eps, (x_sigma - x0) / SIGMAS.reshape(shape), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(pre.c_out_squared(levels), c_out.flatten() ** 2, rtol=1e-9, atol=0)


@pytest.mark.parametrize("kind", ["eps", "v", "x0", "edm"])
def test_target_makes_the_denoiser_exact(kind):
    """F* = (z0 − c_skip x_σ)/c_out, so that D(x_σ) with F = F* returns z0 and ε̂ the noise."""
    g = torch.Generator().manual_seed(1)
    sched = schedule_for()
    levels = levels_at_timesteps(sched, torch.tensor([0, 10, 300, 999]))
    z0 = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    noise = torch.randn(z0.shape, generator=g, dtype=torch.float64)
    x_t = levels.alpha.reshape(-1, 1, 1, 1) * z0 + levels.s.reshape(-1, 1, 1, 1) * noise
    pre = Preconditioning(kind, 0.5 if kind == "edm" else 1.0)
    x0, eps = pre.denoised(pre.target(z0, noise, levels), x_t, levels)
    torch.testing.assert_close(x0, z0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(eps, noise, rtol=1e-7, atol=1e-7)


def test_textbook_targets():
    levels = NoiseLevels(torch.tensor([0.3], dtype=torch.float64))
    z0, noise = torch.ones(1, 1, 1, 1, dtype=torch.float64), 2 * torch.ones(1, 1, 1, 1, dtype=torch.float64)
    a, s = math.sqrt(0.3), math.sqrt(0.7)
    assert Preconditioning("eps").target(z0, noise, levels) is noise
    assert Preconditioning("x0").target(z0, noise, levels) is z0
    v = Preconditioning("v").target(z0, noise, levels)
    assert v.item() == pytest.approx(a * 2 - s * 1)  # v = αε − s z0


def test_zero_terminal_snr_stays_finite_where_it_can():
    """At ᾱ = 0 the VE x_σ is infinite, but v-prediction and EDM give a finite x̂0 from x_t = ε."""
    sched = schedule_for(zero_terminal_snr=True)
    levels = levels_at_timesteps(sched, torch.tensor([999]))
    x_t, out = torch.randn(1, 2, 2, 2, dtype=torch.float64), torch.randn(1, 2, 2, 2, dtype=torch.float64)
    for kind in ("v", "edm"):
        pre = Preconditioning(kind)
        x0, _ = pre.denoised(out, x_t, levels)
        assert torch.isfinite(x0).all(), kind
        assert torch.isfinite(pre.c_noise(levels, sched)).all()
        scale = pre.input_scale(levels)
        assert scale is None or torch.isfinite(scale).all()


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match=r"prediction must be one of \['eps', 'v', 'x0', 'edm'\]"):
        Preconditioning("flow")


def gaussian_network(pre: Preconditioning, sched, data_std: float):
    """The network whose preconditioned D is the exact denoiser of N(0, data_std²) data:
    D(x_σ) = c²/(c² + σ²) x_σ, recovered from (c_in x_σ, c_noise) as F = (D − c_skip x_σ)/c_out."""

    def net(x_in, c_noise, cond=None):
        if pre.kind == "edm":
            sigma = (4 * c_noise.double()).exp()
        else:
            sigma = levels_at_timesteps(sched, c_noise).sigma
        c_skip, c_out, c_in = (c.reshape(-1, 1, 1, 1).to(x_in.dtype) for c in pre.coefficients(sigma))
        x_sigma = x_in / c_in
        d = data_std**2 / (data_std**2 + sigma.reshape(-1, 1, 1, 1).to(x_in.dtype) ** 2) * x_sigma
        return (d - c_skip * x_sigma) / c_out

    return net


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_every_sampler_runs_with_every_parametrisation(sampler):
    """With the exact denoiser of Gaussian data written in each preconditioning, every sampler returns the
    same samples under all four (to rounding), of about the data's standard deviation (50 steps of a
    first-order sampler lose some of it)."""
    from latentdiff.diffusion import Denoiser, get_sampler

    sched = schedule_for()
    x_T = torch.randn(4000, 1, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    outs = {}
    for kind in ("eps", "v", "x0", "edm"):
        pre = Preconditioning(kind, 0.5 if kind == "edm" else 1.0)
        den = Denoiser(gaussian_network(pre, sched, 0.5), sched, pre)
        outs[kind] = get_sampler(sampler)(den, x_T, sched, 50, generator=torch.Generator().manual_seed(1))
        assert torch.isfinite(outs[kind]).all()
        torch.testing.assert_close(outs[kind], outs["eps"], rtol=1e-6, atol=1e-6)
    assert outs["eps"].std().item() == pytest.approx(0.5, rel=0.15)
