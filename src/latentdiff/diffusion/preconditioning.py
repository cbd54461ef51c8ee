"""σ-space preconditioning of the network (Karras et al. 2022, eq. 7 and Table 1):

    D(x_σ; σ, c) = c_skip(σ) x_σ + c_out(σ) F(c_in(σ) x_σ; c_noise(σ), c),   x_σ = z0 + σ ε.

The VP parametrisations are instances: ε-prediction (c_skip = 1, c_out = −σ, c_in = 1/sqrt(1 + σ²)),
v-prediction (Salimans & Ho 2022: c_skip = 1/(1 + σ²), c_out = −σ/sqrt(1 + σ²), same c_in) and
x0-prediction (c_skip = 0, c_out = 1), all with c_noise = the schedule timestep; EDM has
c_skip = σ_d²/(σ² + σ_d²), c_out = σ σ_d/sqrt(σ² + σ_d²), c_in = 1/sqrt(σ² + σ_d²), c_noise = ¼ ln σ.

Samplers hold the variance-preserving x_t = α x_σ (α = 1/sqrt(1 + σ²), s = σα), which stays finite at a
zero terminal SNR where x_σ does not; so the coefficients are applied to x_t: x̂0 = (c_skip/α) x_t +
c_out F((c_in/α) x_t). For the VP kinds c_in/α = 1 and x̂0, ε̂ and the target keep their textbook closed
forms (Ho et al. 2020, eq. 4; Salimans & Ho 2022, appendix D).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from latentdiff.diffusion.noise_levels import NoiseLevels
from latentdiff.diffusion.schedule import NoiseSchedule

PREDICTIONS: tuple[str, ...] = ("eps", "v", "x0", "edm")


def per_sample(values: Tensor, like: Tensor) -> Tensor:
    """(B,) coefficients shaped (B, 1, …) against `like`, in its dtype and on its device."""
    return values.to(device=like.device, dtype=like.dtype).reshape(-1, *[1] * (like.ndim - 1))


@dataclass(frozen=True)
class Preconditioning:
    kind: str = "eps"
    sigma_data: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {list(PREDICTIONS)}, got {self.kind!r}")

    # ------------------------------------------------------------------ Karras et al. 2022, Table 1
    def coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(c_skip, c_out, c_in) at VE noise levels σ, float64, in Table 1's σ-space form."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        one, vp_in = torch.ones_like(sigma), 1 / (1 + sigma**2).sqrt()
        if self.kind == "eps":
            return one, -sigma, vp_in
        if self.kind == "v":
            return 1 / (1 + sigma**2), -sigma * vp_in, vp_in
        if self.kind == "x0":
            return torch.zeros_like(sigma), one, vp_in
        d2 = self.sigma_data**2
        norm = (sigma**2 + d2).sqrt()
        return d2 / norm**2, sigma * self.sigma_data / norm, 1 / norm

    def c_noise(self, levels: NoiseLevels, schedule: NoiseSchedule) -> Tensor:
        """The network's noise input: ¼ ln σ for EDM, else the (fractional) schedule timestep."""
        if self.kind == "edm":
            return levels.sigma.log() / 4
        return levels.t if levels.t is not None else schedule.sigma_to_t(levels.sigma)

    def _edm_norm(self, levels: NoiseLevels) -> Tensor:
        # sqrt(σ² + σ_d²)·α = sqrt(s² + σ_d² ᾱ): finite at ᾱ = 0
        return ((1 - levels.alphas_cumprod) + self.sigma_data**2 * levels.alphas_cumprod).sqrt()

    def input_scale(self, levels: NoiseLevels) -> Tensor | None:
        """c_in/α, the factor on x_t; None where it is exactly 1 (the VP kinds)."""
        return 1 / self._edm_norm(levels) if self.kind == "edm" else None

    def c_out_squared(self, levels: NoiseLevels) -> Tensor:
        """c_out², float64, from ᾱ (finite where σ² = 1/SNR is)."""
        ab = levels.alphas_cumprod
        if self.kind == "eps":
            return (1 - ab) / ab
        if self.kind == "v":
            return 1 - ab
        if self.kind == "x0":
            return torch.ones_like(ab)
        return (1 - ab) * self.sigma_data**2 / self._edm_norm(levels) ** 2

    # ------------------------------------------------------------------ in VP scale
    def denoised(self, out: Tensor, x_t: Tensor, levels: NoiseLevels) -> tuple[Tensor, Tensor]:
        """(x̂0, ε̂) from the raw network output F at x_t, in the promoted dtype of both."""
        if out.shape != x_t.shape:
            raise ValueError(f"model output {tuple(out.shape)} does not match x_t {tuple(x_t.shape)}")
        dtype = torch.promote_types(out.dtype, x_t.dtype)
        out, x_t = out.to(dtype), x_t.to(dtype)
        alpha, s = per_sample(levels.alpha, x_t), per_sample(levels.s, x_t)
        if self.kind == "eps":
            return (x_t - s * out) / alpha, out
        if self.kind == "x0":
            return out, (x_t - alpha * out) / s
        if self.kind == "v":
            return alpha * x_t - s * out, s * x_t + alpha * out
        d, norm = self.sigma_data, self._edm_norm(levels)
        skip = per_sample(d**2 * levels.alpha / norm**2, x_t)
        x0 = skip * x_t + per_sample(levels.s * d / norm, x_t) * out
        return x0, (x_t - alpha * x0) / s

    def target(self, z0: Tensor, noise: Tensor, levels: NoiseLevels) -> Tensor:
        """The F that makes D exact for x_t = α z0 + s ε: (z0 − c_skip x_σ)/c_out in closed form."""
        if self.kind == "eps":
            return noise
        if self.kind == "x0":
            return z0
        alpha, s = per_sample(levels.alpha, z0), per_sample(levels.s, z0)
        if self.kind == "v":
            return alpha * noise - s * z0
        d = self.sigma_data
        return (s * z0 - d**2 * alpha * noise) / per_sample(d * self._edm_norm(levels), z0)
