"""Noise schedules of the variance-preserving forward process q(z_t | z_0) and their lookups.

Timesteps are indices 0 … T−1 of the discrete schedule. Three extensions are used by the samplers:
- a floating-point t between two indices interpolates log σ linearly in t, where σ = sqrt((1−ᾱ)/ᾱ) is
  the variance-exploding noise level; this is the exact inverse of `sigma_to_t` (diffusers'
  `_sigma_to_t`), so a Karras-σ step evaluated at its fractional t sees exactly its own σ;
- t = −1 denotes clean data (ᾱ = 1, σ = 0), the state after a sampler's final step;
- a zero terminal SNR (ᾱ_{T−1} = 0) is kept exactly in the table, but σ (infinite there) is computed with
  a small positive ᾱ_{T−1} (2⁻²⁴ as in diffusers, see `_finite_alphas_cumprod`), so that Karras σ ramps
  and fractional timesteps stay finite.
Coefficients are computed in float64; every method returns the dtype of its floating-point input.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from latentdiff.diffusion.config import DiffusionConfig

# Stand-in for a zero terminal ᾱ where σ must be finite (the value diffusers uses for zero-SNR schedules).
MIN_ALPHA_CUMPROD = 2.0**-24


def linear_betas(num_timesteps: int, beta_start: float, beta_end: float) -> Tensor:
    """β_t evenly spaced from `beta_start` to `beta_end` (Ho et al. 2020, sec. 4)."""
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)


def scaled_linear_betas(num_timesteps: int, beta_start: float, beta_end: float) -> Tensor:
    """sqrt(β_t) evenly spaced (the latent diffusion / Stable Diffusion schedule, Rombach et al. 2022)."""
    return torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float64) ** 2


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Nichol & Dhariwal 2021, eq. 17: ᾱ(τ) = f(τ)/f(0), f(τ) = cos²((τ/T + s)/(1 + s) · π/2), with
    β = 1 − ᾱ(τ+1)/ᾱ(τ) clipped at `max_beta` (their sec. 3.2) so the last step stays finite."""
    tau = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    f = torch.cos((tau + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


def rescale_zero_terminal_snr(betas: Tensor) -> Tensor:
    """Lin et al. 2024, Algorithm 1: shift and scale sqrt(ᾱ) so that sqrt(ᾱ_{T−1}) = 0 while sqrt(ᾱ_0) is
    unchanged, then recover the betas."""
    sqrt_ab = torch.cumprod(1 - betas.double(), 0).sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    ab = sqrt_ab**2
    alphas = torch.cat([ab[:1], ab[1:] / ab[:-1]])
    return 1 - alphas


class NoiseSchedule:
    """The discrete VP forward process x_t = sqrt(ᾱ_t) x_0 + sqrt(1 − ᾱ_t) ε (Ho et al. 2020, eq. 4)."""

    def __init__(self, alphas_cumprod: Tensor) -> None:
        ab = torch.as_tensor(alphas_cumprod, dtype=torch.float64).detach().cpu()
        if ab.ndim != 1 or ab.numel() < 2:
            raise ValueError(f"alphas_cumprod must be 1-D with >= 2 entries, got shape {tuple(ab.shape)}")
        if not (0 < ab[0] < 1 and (ab >= 0).all() and (ab[1:] <= ab[:-1]).all()):
            raise ValueError(
                "alphas_cumprod must be non-increasing in [0, 1) with alphas_cumprod[0] > 0, got "
                f"first {ab[0].item():.6g}, last {ab[-1].item():.6g}"
            )
        self.alphas_cumprod = ab
        # Index t + 1 of this table is ᾱ_t for t = −1 (clean) … T−1.
        self._ab_with_clean = torch.cat([ab.new_ones(1), ab])
        finite = self._finite_alphas_cumprod(ab)
        self.sigmas = ((1 - finite) / finite).sqrt()
        self._log_sigmas = self.sigmas.log()
        if not (self._log_sigmas[1:] > self._log_sigmas[:-1]).all():
            raise ValueError("alphas_cumprod must be strictly decreasing to map noise levels to timesteps")

    @staticmethod
    def _finite_alphas_cumprod(ab: Tensor) -> Tensor:
        """ᾱ with a zero terminal value replaced by a small positive one: 2⁻²⁴ as in diffusers, or, where
        that would not stay below ᾱ_{T−2}, the geometric extrapolation of the last step, so σ stays
        strictly increasing."""
        if ab[-1] > 0:
            return ab
        ratio = float(ab[-2] / ab[-3]) if ab.numel() >= 3 else 0.5
        finite = ab.clone()
        finite[-1] = min(MIN_ALPHA_CUMPROD, float(ab[-2]) * ratio)
        return finite

    @classmethod
    def from_betas(cls, betas: Tensor) -> NoiseSchedule:
        return cls(torch.cumprod(1 - torch.as_tensor(betas, dtype=torch.float64), 0))

    @property
    def num_timesteps(self) -> int:
        return self.alphas_cumprod.numel()

    @property
    def betas(self) -> Tensor:
        ab = self._ab_with_clean
        return 1 - ab[1:] / ab[:-1]

    def _check_t(self, t: Tensor) -> None:
        last = self.num_timesteps - 1
        bad = (t < -1) | (t > last)
        if t.is_floating_point():
            bad |= (t < 0) & (t != -1)
        if bool(bad.any()):
            raise ValueError(
                f"timesteps must lie in [0, {last}] (or be -1 for clean data); got min {t.min().item()}, "
                f"max {t.max().item()}"
            )

    def _alphas_cumprod64(self, t: Tensor) -> Tensor:
        self._check_t(t)
        table = self._ab_with_clean.to(t.device)
        if not t.is_floating_point():
            return table[t.long() + 1]
        td = t.double()
        exact = table[td.round().long() + 1]
        low = td.floor().clamp(0, self.num_timesteps - 2)
        log_sigmas = self._log_sigmas.to(t.device)
        lo, hi = log_sigmas[low.long()], log_sigmas[low.long() + 1]
        log_sigma = lo + (td - low) * (hi - lo)
        interpolated = torch.sigmoid(-2 * log_sigma)  # 1 / (1 + σ²)
        return torch.where(td == td.round(), exact, interpolated)

    @staticmethod
    def _out_dtype(t: Tensor) -> torch.dtype:
        return t.dtype if t.is_floating_point() else torch.float64

    def alphas_cumprod_at(self, t: Tensor | int | float) -> Tensor:
        """ᾱ_t: exact for integer-valued t, log-σ interpolation for fractional t (module docstring);
        float64 for integer t, else the dtype of t."""
        t = torch.as_tensor(t)
        return self._alphas_cumprod64(t).to(self._out_dtype(t))

    def alpha_sigma(self, t: Tensor | int | float) -> tuple[Tensor, Tensor]:
        """(sqrt(ᾱ_t), sqrt(1 − ᾱ_t)); float64 for integer t, else the dtype of t."""
        t = torch.as_tensor(t)
        ab = self._alphas_cumprod64(t)
        dtype = self._out_dtype(t)
        return ab.sqrt().to(dtype), (1 - ab).sqrt().to(dtype)

    def snr(self, t: Tensor | int | float) -> Tensor:
        """Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t) (infinite at t = −1, zero for a zero-SNR last step)."""
        t = torch.as_tensor(t)
        ab = self._alphas_cumprod64(t)
        return (ab / (1 - ab)).to(self._out_dtype(t))

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        """Fractional timestep (float64) whose VE noise level is `sigma`: linear interpolation of log σ
        between neighbouring indices, clipped to [0, T−1] (diffusers' `_sigma_to_t`)."""
        log_sigma = torch.as_tensor(sigma, dtype=torch.float64).clamp(min=1e-10).log()
        log_sigmas = self._log_sigmas.to(log_sigma.device)
        low = (torch.searchsorted(log_sigmas, log_sigma, right=True) - 1).clamp(0, self.num_timesteps - 2)
        lo, hi = log_sigmas[low], log_sigmas[low + 1]
        w = ((log_sigma - lo) / (hi - lo)).clamp(0, 1)
        return low + w

    def add_noise(self, z0: Tensor, noise: Tensor, t: Tensor | int | float) -> Tensor:
        """Sample q(z_t | z_0) = N(sqrt(ᾱ_t) z_0, (1 − ᾱ_t) I) (Ho et al. 2020, eq. 4) with the given noise.

        `t` is a scalar or of shape (B,) with B = z0.shape[0]; the result has z0's dtype."""
        if z0.shape != noise.shape:
            raise ValueError(f"z0 {tuple(z0.shape)} and noise {tuple(noise.shape)} must have the same shape")
        t = torch.as_tensor(t, device=z0.device)
        if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != z0.shape[0]):
            raise ValueError(f"t must be a scalar or of shape ({z0.shape[0]},), got {tuple(t.shape)}")
        shape = (-1, *[1] * (z0.ndim - 1))
        alpha, sigma = self.alpha_sigma(t)
        return alpha.to(z0.dtype).reshape(shape) * z0 + sigma.to(z0.dtype).reshape(shape) * noise


def make_betas(cfg: DiffusionConfig) -> Tensor:
    if cfg.schedule == "linear":
        betas = linear_betas(cfg.num_timesteps, cfg.beta_start, cfg.beta_end)
    elif cfg.schedule == "scaled_linear":
        betas = scaled_linear_betas(cfg.num_timesteps, cfg.beta_start, cfg.beta_end)
    else:
        betas = cosine_betas(cfg.num_timesteps)
    return rescale_zero_terminal_snr(betas) if cfg.zero_terminal_snr else betas


def make_schedule(cfg: DiffusionConfig) -> NoiseSchedule:
    return NoiseSchedule.from_betas(make_betas(cfg))
