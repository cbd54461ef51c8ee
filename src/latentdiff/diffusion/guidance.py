"""The denoiser every sampler calls: the preconditioned network with classifier-free guidance or
autoguidance."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from latentdiff.diffusion.noise_levels import levels_at_timesteps
from latentdiff.diffusion.preconditioning import Preconditioning, per_sample
from latentdiff.diffusion.schedule import NoiseSchedule

log = logging.getLogger(__name__)

Condition = Mapping[str, Tensor]
Model = Callable[[Tensor, Tensor, Condition | None], Tensor]


def check_guidance_scale(
    scale: float, name: str = "guidance_scale", negative: str | None = "negative conditioning"
) -> float:
    """`scale` as a float, or a ValueError naming `name` (a function argument, a flag or a config key)
    and, for a negative scale, `negative` (what steers away from a condition instead).

    w must be finite and ≥ 0: 1 is the conditional model, 0 the unconditional (null or negative) one, in
    between a mix and above 1 guidance. A negative w is refused: it extrapolates past the unconditional
    model away from the condition, outputs no training ever shaped; steering away from something is what
    the negative conditioning (a negative class) is for. A NaN or infinite w would turn every image into NaN.
    """
    try:
        value = float(scale)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {scale!r}") from None
    if not math.isfinite(value) or value < 0:
        hint = f"; to steer away from a class, pass it as {negative}" if value < 0 and negative else ""
        raise ValueError(
            f"{name} must be a finite number >= 0 (1 = no guidance, > 1 = stronger), got {scale}{hint}"
        )
    return value


def check_guidance_interval(
    interval: tuple[float, float] | list[float] | None, name: str = "guidance_interval"
) -> tuple[float, float] | None:
    """`interval` as (σ_lo, σ_hi) with 0 ≤ σ_lo < σ_hi (σ_hi may be inf), or a ValueError naming `name`."""
    if interval is None:
        return None
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be two noise levels (sigma_low, sigma_high), got {interval!r}"
        ) from None
    if not (0 <= lo < hi) or math.isnan(hi):
        raise ValueError(f"{name} must satisfy 0 <= sigma_low < sigma_high, got ({lo:g}, {hi:g})")
    return lo, hi


def _stack(a: Condition, b: Condition, device: torch.device) -> dict[str, Tensor]:
    if set(a) != set(b):
        raise ValueError(f"guidance needs the same conditioning keys on both sides: {sorted(a)}, {sorted(b)}")
    return {k: torch.cat([torch.as_tensor(a[k]).to(device), torch.as_tensor(b[k]).to(device)]) for k in a}


class Denoiser:
    """Wrap the network `model(x, c_noise, cond) -> F` as `denoiser(x_t, t) -> (x̂_0, ε̂)` for the samplers.

    x_t is in variance-preserving scale and t (shape (B,), int64 or fractional float64) a schedule
    timestep; `precond` turns F into x̂_0 (`diffusion.preconditioning`). With `guidance_scale` w ≠ 1 the
    raw outputs are combined as F_u + w·(F_c − F_u) (Ho & Salimans 2022, eq. 6, written for F, which is
    affine in x̂_0 and ε̂ at fixed x_t and σ), F_c from `cond`, F_u from `uncond` — the null conditioning,
    or a negative prompt's — in ONE forward pass over the doubled batch. With w = 1 only `cond` runs.
    With a `guide` network (autoguidance, Karras et al. 2024, "Guiding a diffusion model with a bad version
    of itself", eq. 2) the contrast is with that weaker model under the SAME conditioning instead:
    F_g + w·(F_c − F_g), two forward passes; it needs no conditioning, so it also guides an unconditional
    model. The guide must share the network's preconditioning (same diffusion config, same latents).
    `clip_x0=(lo, hi)` clamps x̂_0 and re-derives ε̂ from it so that x_t = α x̂_0 + s ε̂ still holds.
    `guidance_interval=(σ_lo, σ_hi)` guides only where σ_lo < σ ≤ σ_hi (VE σ of x_t) and runs the network
    alone elsewhere (Kynkäänniemi et al. 2024, "Applying guidance in a limited interval improves sample and
    distribution quality in diffusion models"): they find guidance harmful to diversity at high noise levels
    and of little use at low ones; outside the interval the second forward pass is skipped too.
    """

    def __init__(
        self,
        model: Model,
        schedule: NoiseSchedule,
        precond: Preconditioning | str,
        cond: Condition | None = None,
        uncond: Condition | None = None,
        guidance_scale: float = 1.0,
        clip_x0: tuple[float, float] | None = None,
        guide: Model | None = None,
        guidance_interval: tuple[float, float] | None = None,
    ) -> None:
        precond = Preconditioning(precond) if isinstance(precond, str) else precond
        guidance_scale = check_guidance_scale(guidance_scale)
        if guidance_scale != 1.0 and guide is None and (not cond or uncond is None):
            raise ValueError(
                f"guidance_scale={guidance_scale} needs a conditioning and an unconditional (null or "
                "negative) one, or a guide model (autoguidance); use guidance_scale=1.0 for an "
                "unconditional model"
            )
        if clip_x0 is not None and not clip_x0[0] < clip_x0[1]:
            raise ValueError(f"clip_x0 must be (low, high) with low < high, got {clip_x0}")
        if precond.kind == "eps" and schedule.alphas_cumprod[-1] == 0:
            log.warning(
                "eps-prediction on a zero-terminal-SNR schedule: x0 is undefined at t = %d, so sampling from "
                "there gives NaN (Lin et al. 2024 use v-prediction)",
                schedule.num_timesteps - 1,
            )
        self.guidance_interval = check_guidance_interval(guidance_interval)
        self.model, self.schedule, self.precond = model, schedule, precond
        self.cond = dict(cond) if cond else None
        self.uncond = dict(uncond) if uncond is not None else None
        self.guidance_scale = float(guidance_scale)
        self.clip_x0 = clip_x0
        self.guide = guide

    def _cond_for(self, cond: Condition | None, batch: int, device: torch.device) -> dict[str, Tensor] | None:
        if cond is None:
            return None
        out = {}
        for key, value in cond.items():
            value = torch.as_tensor(value).to(device)
            if value.shape[:1] != (batch,):
                raise ValueError(f"cond[{key!r}] has batch {tuple(value.shape[:1])}, the latents {batch}")
            out[key] = value
        return out

    def model_output(self, x_in: Tensor, c_noise: Tensor, guided: Tensor | None = None) -> Tensor:
        """The (guided) raw network output F for network input x_in and noise input c_noise (B,); with
        `guided` (bool, (B,)) only those samples are guided, the others get the network alone."""
        cond = self._cond_for(self.cond, x_in.shape[0], x_in.device)
        if self.guidance_scale == 1.0 or (guided is not None and not guided.any()):
            return self.model(x_in, c_noise, cond)
        if guided is not None and not guided.all():
            # samplers step the whole batch at one level, so a mixed batch is rare: run both and pick
            plain, both = self.model(x_in, c_noise, cond), self.model_output(x_in, c_noise)
            return torch.where(guided.reshape(-1, *[1] * (both.ndim - 1)).to(both.device), both, plain)
        if self.guide is not None:
            f_good, f_bad = self.model(x_in, c_noise, cond), self.guide(x_in, c_noise, cond)
            return f_bad + self.guidance_scale * (f_good - f_bad)
        uncond = self._cond_for(self.uncond, x_in.shape[0], x_in.device)
        both_cond = _stack(cond, uncond, x_in.device)
        both = self.model(torch.cat([x_in, x_in]), torch.cat([c_noise, c_noise]), both_cond)
        f_cond, f_uncond = both.chunk(2)
        return f_uncond + self.guidance_scale * (f_cond - f_uncond)

    def __call__(self, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        t = torch.as_tensor(t, device=x_t.device)
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        levels = levels_at_timesteps(self.schedule, t)
        scale = self.precond.input_scale(levels)
        x_in = x_t if scale is None else x_t * per_sample(scale, x_t)
        c_noise = self.precond.c_noise(levels, self.schedule).to(x_t.device)
        guided = None
        if self.guidance_interval is not None:
            lo, hi = self.guidance_interval
            sigma = levels.sigma.to(x_t.device)
            guided = (sigma > lo) & (sigma <= hi)
        x0, eps = self.precond.denoised(self.model_output(x_in, c_noise, guided), x_t, levels)
        if self.clip_x0 is None:
            return x0, eps
        x0 = x0.clamp(*self.clip_x0)
        return x0, (x_t.to(x0.dtype) - per_sample(levels.alpha, x0) * x0) / per_sample(levels.s, x0)
