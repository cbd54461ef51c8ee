"""Noise levels of a batch and how training draws them (Karras et al. 2022, Table 1 "noise distribution").

A level is stored as ᾱ (float64, per sample), from which everything else follows in closed form:
α = sqrt(ᾱ), s = sqrt(1 − ᾱ) (the VP scales, x_t = α z0 + s ε), σ = s/α (the VE noise level, x_σ = z0 + σ ε
= x_t/α) and SNR = ᾱ/(1 − ᾱ) = 1/σ². `t` is the schedule timestep when the level came from one: the
network's noise input under VP preconditioning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from latentdiff.diffusion.config import DiffusionConfig
from latentdiff.diffusion.schedule import MIN_ALPHA_CUMPROD, NoiseSchedule


class Draws(Protocol):
    """Per-sample random numbers (training's `BatchRandom`): each call returns one value per sample."""

    def randint(self, low: int, high: int) -> Tensor: ...

    def randn(self) -> Tensor: ...


@dataclass(frozen=True)
class NoiseLevels:
    alphas_cumprod: Tensor
    t: Tensor | None = None

    @property
    def alpha(self) -> Tensor:
        return self.alphas_cumprod.sqrt()

    @property
    def s(self) -> Tensor:
        return (1 - self.alphas_cumprod).sqrt()

    @property
    def sigma(self) -> Tensor:
        """VE σ; finite where ᾱ = 0 (a zero-terminal-SNR step), like the schedule's own σ table."""
        ab = self.alphas_cumprod
        return ((1 - ab) / ab.clamp(min=MIN_ALPHA_CUMPROD)).sqrt()

    @property
    def snr(self) -> Tensor:
        ab = self.alphas_cumprod
        return ab / (1 - ab)


def levels_at_timesteps(schedule: NoiseSchedule, t: Tensor) -> NoiseLevels:
    """The levels of schedule timesteps t (int64, or float64 fractional: see `NoiseSchedule`)."""
    t = torch.as_tensor(t)
    return NoiseLevels(schedule.alphas_cumprod_at(t).double(), t)


def levels_at_sigmas(sigma: Tensor) -> NoiseLevels:
    """The levels of VE noise levels σ: ᾱ = 1/(1 + σ²)."""
    return NoiseLevels(1 / (1 + torch.as_tensor(sigma, dtype=torch.float64) ** 2))


def sample_noise_levels(cfg: DiffusionConfig, schedule: NoiseSchedule, draws: Draws) -> NoiseLevels:
    """One training batch of noise levels, by `cfg.noise_sampling`:
    - `uniform`: t ~ U{0, …, T−1} (Ho et al. 2020, Algorithm 1);
    - `log_normal`: ln σ ~ N(P_mean, P_std²) (Karras et al. 2022, Table 1); for the VP preconditionings σ is
      clipped to the schedule's range, whose timesteps are all the network knows;
    - `logit_normal`: u ~ N(m, s²), t = sigmoid(u)·(T − 1) fractional (Esser et al. 2024, eq. 19, on the
      schedule's timesteps).
    """
    T = schedule.num_timesteps
    if cfg.noise_sampling == "uniform":
        return levels_at_timesteps(schedule, draws.randint(0, T))
    mean, std = cfg.noise_normal
    normal = draws.randn().double() * std + mean
    if cfg.noise_sampling == "logit_normal":
        return levels_at_timesteps(schedule, torch.sigmoid(normal) * (T - 1))
    sigma = normal.exp()
    if cfg.prediction == "edm":
        return levels_at_sigmas(sigma)
    lo, hi = schedule.sigmas[0].item(), schedule.sigmas[-1].item()
    sigma = sigma.clamp(lo, hi)
    return NoiseLevels(levels_at_sigmas(sigma).alphas_cumprod, schedule.sigma_to_t(sigma).to(sigma.device))
