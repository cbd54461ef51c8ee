"""Euler and Heun samplers on Karras et al. (2022) noise levels: the two ODE solvers and EDM's stochastic one.

They integrate the probability-flow ODE dx/dσ = (x − x̂_0)/σ in variance-exploding scale x_ve = x_vp ·
sqrt(1 + σ²), σ = sqrt((1 − ᾱ)/ᾱ), and call the (VP) denoiser at the fractional timestep whose noise level
is σ (`NoiseSchedule.sigma_to_t`), as diffusers' Euler/HeunDiscreteScheduler with use_karras_sigmas=True
do. x_T, the callback's x and its replacement are in VP scale, like every other sampler's.
"""

from __future__ import annotations

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


def karras_sigmas(schedule: NoiseSchedule, steps: int, rho: float = 7.0) -> Tensor:
    """Karras et al. 2022, eq. 5: σ_i = (σ_max^{1/ρ} + i/(N−1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ for
    i < N = steps, between the schedule's σ at t = T−1 and t = 0, followed by σ_N = 0. Float64."""
    if steps < 1 or rho <= 0:
        raise ValueError(f"need steps >= 1 and rho > 0, got steps={steps}, rho={rho}")
    min_inv_rho, max_inv_rho = schedule.sigmas[0] ** (1 / rho), schedule.sigmas[-1] ** (1 / rho)
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    return torch.cat([(max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho, torch.zeros(1).double()])


def karras_timesteps(schedule: NoiseSchedule, steps: int, rho: float = 7.0) -> Tensor:
    """Fractional input timestep of each step (float64)."""
    return schedule.sigma_to_t(karras_sigmas(schedule, steps, rho)[:-1])


def _plan(schedule: NoiseSchedule, steps: int, rho: float) -> tuple[list[float], list[float]]:
    sigmas = karras_sigmas(schedule, steps, rho)
    return sigmas.tolist(), schedule.sigma_to_t(sigmas[:-1]).tolist() + [float(CLEAN)]


def _denoise_ve(denoiser: DenoiseFn, x_ve: Tensor, sigma: float, t: float) -> Tensor:
    x0, _ = denoiser(x_ve / (1 + sigma**2) ** 0.5, timestep_batch(t, x_ve))
    return x0


def _after_step_ve(
    callback: StepCallback | None, i: int, t: float, x_ve: Tensor, sigma: float, x0: Tensor
) -> Tensor:
    """`after_step` with the VE state shown to (and replaced by) the callback in VP scale."""
    if callback is None:
        return x_ve
    scale = (1 + sigma**2) ** 0.5
    x_vp = x_ve / scale
    replaced = after_step(callback, i, timestep_batch(t, x_ve), x_vp, x0)
    return x_ve if replaced is x_vp else replaced * scale


def sample_euler(
    denoiser: DenoiseFn,
    x_T: Tensor,
    schedule: NoiseSchedule,
    steps: int,
    *,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
    start_index: int = 0,
    rho: float = 7.0,
) -> Tensor:
    """Euler's method on Karras σ (Karras et al. 2022, Algorithm 1 without the second-order correction):
    x_{i+1} = x_i + (σ_{i+1} − σ_i) d_i, d_i = (x_i − x̂_0(x_i, σ_i))/σ_i. One denoiser call per step;
    deterministic (`generator` is accepted for the common signature only)."""
    check_steps(steps, start_index)
    sigmas, ts = _plan(schedule, steps, rho)
    x = working_copy(x_T) * (1 + sigmas[start_index] ** 2) ** 0.5
    for i in range(start_index, steps):
        x0 = _denoise_ve(denoiser, x, sigmas[i], ts[i])
        x = x + (sigmas[i + 1] - sigmas[i]) * ((x - x0) / sigmas[i])
        x = _after_step_ve(callback, i, ts[i + 1], x, sigmas[i + 1], x0)
    return x.to(x_T.dtype)


def sample_heun(
    denoiser: DenoiseFn,
    x_T: Tensor,
    schedule: NoiseSchedule,
    steps: int,
    *,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
    start_index: int = 0,
    rho: float = 7.0,
) -> Tensor:
    """Heun's second-order method on Karras σ (Karras et al. 2022, Algorithm 1): an Euler step to
    σ_{i+1}, then, unless σ_{i+1} = 0, the average of the slopes at both ends. 2·steps − 1 denoiser calls;
    deterministic (`generator` is accepted for the common signature only)."""
    check_steps(steps, start_index)
    sigmas, ts = _plan(schedule, steps, rho)
    x = working_copy(x_T) * (1 + sigmas[start_index] ** 2) ** 0.5
    for i in range(start_index, steps):
        x, x0 = _heun_step(denoiser, x, sigmas[i], ts[i], sigmas[i + 1], ts[i + 1])
        x = _after_step_ve(callback, i, ts[i + 1], x, sigmas[i + 1], x0)
    return x.to(x_T.dtype)


def _heun_step(
    denoiser: DenoiseFn, x: Tensor, sigma: float, t: float, sigma_next: float, t_next: float
) -> tuple[Tensor, Tensor]:
    """One step of Karras et al. 2022, Algorithm 1 from σ to σ_next (VE scale): (x_next, the last x̂_0)."""
    x0 = _denoise_ve(denoiser, x, sigma, t)
    d = (x - x0) / sigma
    x_next = x + (sigma_next - sigma) * d
    if sigma_next > 0:
        x0 = _denoise_ve(denoiser, x_next, sigma_next, t_next)
        d_next = (x_next - x0) / sigma_next
        x_next = x + (sigma_next - sigma) * ((d + d_next) / 2)
    return x_next, x0


def sample_edm_stochastic(
    denoiser: DenoiseFn,
    x_T: Tensor,
    schedule: NoiseSchedule,
    steps: int,
    *,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
    start_index: int = 0,
    rho: float = 7.0,
    s_churn: float = 5.0,
    s_tmin: float = 0.05,
    s_tmax: float = 50.0,
    s_noise: float = 1.003,
) -> Tensor:
    """EDM's stochastic sampler (Karras et al. 2022, Algorithm 2): before each Heun step with σ_i in
    [s_tmin, s_tmax], noise is added to raise the level to σ̂_i = (1 + γ) σ_i, γ = min(s_churn/steps, √2 − 1),
    x̂_i = x_i + sqrt(σ̂_i² − σ_i²)·s_noise·ε, and the step runs from σ̂_i to σ_{i+1}. The fresh noise
    corrects part of the error that earlier steps (and an imperfect network) left. σ̂ is capped at the
    schedule's σ_max, the highest level the network was trained on. 2·steps − 1 denoiser calls; s_churn = 0
    is `heun`. Unlike diffusers' EulerDiscreteScheduler with s_churn, the network sees σ̂, not σ_i."""
    check_steps(steps, start_index)
    sigmas, ts = _plan(schedule, steps, rho)
    sigma_max = float(schedule.sigmas[-1])
    gamma = min(s_churn / steps, 2**0.5 - 1)
    x = working_copy(x_T) * (1 + sigmas[start_index] ** 2) ** 0.5
    for i in range(start_index, steps):
        sigma, t = sigmas[i], ts[i]
        if gamma > 0 and s_tmin <= sigma <= s_tmax:
            sigma_hat = min(sigma * (1 + gamma), sigma_max)
            if sigma_hat > sigma:
                noise = randn_from(generator, x)
                x = x + (sigma_hat**2 - sigma**2) ** 0.5 * s_noise * noise
                sigma, t = sigma_hat, float(schedule.sigma_to_t(torch.tensor([sigma_hat]).double())[0])
        x, x0 = _heun_step(denoiser, x, sigma, t, sigmas[i + 1], ts[i + 1])
        x = _after_step_ve(callback, i, ts[i + 1], x, sigmas[i + 1], x0)
    return x.to(x_T.dtype)
