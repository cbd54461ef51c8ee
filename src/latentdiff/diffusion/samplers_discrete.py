"""Samplers on the discrete timesteps of the schedule: DDPM, DDIM and DPM-Solver++(2M).

All share the signature `sample(denoiser, x_T, schedule, steps, *, generator, callback, **opts)`; x_T lives
at the first listed timestep (start_index = 0) in variance-preserving scale. Timestep spacings follow
diffusers 0.42.1's defaults ("leading" for DDPM/DDIM, "linspace" for DPM-Solver++), so that the same
`steps` visit the same timesteps.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from latentdiff.diffusion.sampler_common import (
    CLEAN,
    DenoiseFn,
    StepCallback,
    after_step,
    check_steps,
    randn_from,
    timestep_batch,
    working_copy,
)
from latentdiff.diffusion.schedule import NoiseSchedule

Spacing = Literal["leading", "linspace", "trailing"]


def spaced_timesteps(num_timesteps: int, steps: int, spacing: Spacing) -> list[int]:
    """`steps` descending integer timesteps (Lin et al. 2024, Table 2): "leading" = k·⌊T/steps⌋,
    "linspace" = round(linspace(0, T−1, steps)), "trailing" = round(T − k·T/steps) − 1."""
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"steps must lie in [1, {num_timesteps}] (the schedule's timesteps), got {steps}")
    f64 = torch.float64
    if spacing == "leading":
        ts = torch.arange(steps, dtype=f64) * (num_timesteps // steps)
    elif spacing == "linspace":
        # i · (T−1)/(steps−1) with an exact endpoint, as numpy's linspace computes it (diffusers rounds that).
        ts = torch.arange(steps, dtype=f64) * ((num_timesteps - 1) / max(steps - 1, 1))
        ts[-1] = num_timesteps - 1 if steps > 1 else 0
        ts = ts.round()
    elif spacing == "trailing":
        # T + k·δ with δ = (T − T/steps) − T, numpy's arange arithmetic; exactly `steps` values (diffusers'
        # arange can yield steps + 1 of them, the last one −1, from floating-point rounding).
        delta = (num_timesteps - num_timesteps / steps) - num_timesteps
        ts = (num_timesteps + torch.arange(steps, dtype=f64) * delta).round().flip(0) - 1
    else:
        raise ValueError(f"timestep_spacing must be 'leading', 'linspace' or 'trailing', got {spacing!r}")
    return [int(t) for t in ts.flip(0)]


def ddpm_timesteps(schedule: NoiseSchedule, steps: int, timestep_spacing: Spacing = "leading") -> Tensor:
    """Input timestep of each DDPM/DDIM step (all T of them when steps == T with "leading" spacing)."""
    return torch.tensor(spaced_timesteps(schedule.num_timesteps, steps, timestep_spacing))


def dpmpp_timesteps(schedule: NoiseSchedule, steps: int, timestep_spacing: Spacing = "linspace") -> Tensor:
    """Input timestep of each DPM-Solver++ step: diffusers spaces steps + 1 points and drops t = 0, since the
    last step lands on clean data itself ("trailing" already ends above 0)."""
    if timestep_spacing == "trailing":
        return ddpm_timesteps(schedule, steps, timestep_spacing)
    return torch.tensor(spaced_timesteps(schedule.num_timesteps, steps + 1, timestep_spacing)[:-1])


def _alpha_bar(schedule: NoiseSchedule, t: int) -> float:
    return 1.0 if t == CLEAN else float(schedule.alphas_cumprod[t])


def sample_ddpm(
    denoiser: DenoiseFn,
    x_T: Tensor,
    schedule: NoiseSchedule,
    steps: int,
    *,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
    start_index: int = 0,
    timestep_spacing: Spacing = "leading",
) -> Tensor:
    """Ancestral sampling from the posterior q(x_s | x_t, x̂_0) (Ho et al. 2020, eq. 6–7, Algorithm 2) with
    the "fixed small" variance β̃ = (1 − ᾱ_s)/(1 − ᾱ_t) · β.

    With steps < T the chain is respaced (Nichol & Dhariwal 2021, sec. 4): from t to the next listed s the
    step uses the beta implied by the sub-sequence, β = 1 − ᾱ_t/ᾱ_s.
    """
    check_steps(steps, start_index, schedule.num_timesteps)
    ts = ddpm_timesteps(schedule, steps, timestep_spacing).tolist() + [CLEAN]
    x = working_copy(x_T)
    for i in range(start_index, steps):
        ab, ab_prev = _alpha_bar(schedule, ts[i]), _alpha_bar(schedule, ts[i + 1])
        beta = 1 - ab / ab_prev
        x0, _ = denoiser(x, timestep_batch(ts[i], x))
        x = (ab_prev**0.5 * beta / (1 - ab)) * x0 + ((1 - beta) ** 0.5 * (1 - ab_prev) / (1 - ab)) * x
        variance = (1 - ab_prev) / (1 - ab) * beta
        if variance > 0:
            x = x + variance**0.5 * randn_from(generator, x)
        x = after_step(callback, i, timestep_batch(ts[i + 1], x), x, x0)
    return x.to(x_T.dtype)


def sample_ddim(
    denoiser: DenoiseFn,
    x_T: Tensor,
    schedule: NoiseSchedule,
    steps: int,
    *,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
    start_index: int = 0,
    timestep_spacing: Spacing = "leading",
    eta: float = 0.0,
) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12): x_s = sqrt(ᾱ_s) x̂_0 + sqrt(1 − ᾱ_s − σ²) ε̂ + σ z with
    σ = η sqrt((1 − ᾱ_s)/(1 − ᾱ_t)) sqrt(1 − ᾱ_t/ᾱ_s) (eq. 16); η = 0 is deterministic, η = 1 draws z from
    `generator` and has DDPM's posterior variance."""
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    check_steps(steps, start_index, schedule.num_timesteps)
    ts = ddpm_timesteps(schedule, steps, timestep_spacing).tolist() + [CLEAN]
    x = working_copy(x_T)
    for i in range(start_index, steps):
        ab, ab_prev = _alpha_bar(schedule, ts[i]), _alpha_bar(schedule, ts[i + 1])
        x0, eps = denoiser(x, timestep_batch(ts[i], x))
        std = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)) ** 0.5
        x = ab_prev**0.5 * x0 + max(0.0, 1 - ab_prev - std**2) ** 0.5 * eps
        if std > 0:
            x = x + std * randn_from(generator, x)
        x = after_step(callback, i, timestep_batch(ts[i + 1], x), x, x0)
    return x.to(x_T.dtype)


def _alpha_sigma_lambda(schedule: NoiseSchedule, t: int) -> tuple[float, float, float]:
    """VP (α, σ) and log-SNR λ = log(α/σ) from the finite VE σ table (a zero terminal SNR stays finite)."""
    sigma_ve = float(schedule.sigmas[t])
    alpha = 1 / math.sqrt(1 + sigma_ve**2)
    return alpha, sigma_ve * alpha, -math.log(sigma_ve)


def sample_dpmpp_2m(
    denoiser: DenoiseFn,
    x_T: Tensor,
    schedule: NoiseSchedule,
    steps: int,
    *,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
    start_index: int = 0,
    timestep_spacing: Spacing = "linspace",
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), data prediction, midpoint form:
    x_s = (σ_s/σ_t) x_t − α_s (e^{−h} − 1) D, h = λ_s − λ_t, D = x̂_0 + (x̂_0 − x̂_0,prev)/(2r), r = h_prev/h.

    The first step (no history, also after `start_index`) is first order (D = x̂_0), and so is the last,
    which lands on σ = 0 and returns x̂_0 (diffusers' lower_order_final / final_sigmas_type="zero").
    Deterministic: `generator` is accepted for the common signature only.
    """
    check_steps(steps, start_index, schedule.num_timesteps - 1)
    ts = dpmpp_timesteps(schedule, steps, timestep_spacing).tolist() + [CLEAN]
    x = working_copy(x_T)
    x0_prev, lam_prev = None, 0.0
    for i in range(start_index, steps):
        _, sigma, lam = _alpha_sigma_lambda(schedule, ts[i])
        x0, _ = denoiser(x, timestep_batch(ts[i], x))
        if ts[i + 1] == CLEAN:
            x = x0
        else:
            alpha_next, sigma_next, lam_next = _alpha_sigma_lambda(schedule, ts[i + 1])
            h = lam_next - lam
            d = x0 if x0_prev is None else x0 + (h / (2 * (lam - lam_prev))) * (x0 - x0_prev)
            x = (sigma_next / sigma) * x - (alpha_next * math.expm1(-h)) * d
        x0_prev, lam_prev = x0, lam
        x = after_step(callback, i, timestep_batch(ts[i + 1], x), x, x0)
    return x.to(x_T.dtype)
