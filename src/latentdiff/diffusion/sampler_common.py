"""What every sampler shares: the denoiser and callback types, noise draws and per-step bookkeeping."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

# denoiser(x_t, t) -> (x̂_0, ε̂), x_t in variance-preserving scale, t of shape (B,); see guidance.Denoiser.
DenoiseFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
# callback({"i", "t", "x", "x0_pred"}) -> replacement x (VP scale) or None.
StepCallback = Callable[[dict[str, Any]], Tensor | None]

CLEAN = -1  # the timestep of clean data, reached after a sampler's final step


def randn_from(generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Standard normal noise shaped like `like`, drawn on the generator's own device (so a CPU generator
    gives the same numbers wherever `like` lives, as diffusers' `randn_tensor` does)."""
    device = generator.device if generator is not None else like.device
    return torch.randn(like.shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


def timestep_batch(t: int | float, like: Tensor) -> Tensor:
    """t repeated over the batch: int64 for a discrete timestep, float64 for a fractional one (float64 so
    that the denoiser recovers the sampler's noise level exactly)."""
    dtype = torch.int64 if isinstance(t, int) else torch.float64
    return torch.full((like.shape[0],), t, dtype=dtype, device=like.device)


def working_copy(x_T: Tensor) -> Tensor:
    """The sampler state: float32 for half-precision inputs (the update sums lose too much in 16 bits)."""
    return x_T.float() if x_T.dtype in (torch.float16, torch.bfloat16) else x_T


def check_steps(steps: int, start_index: int, limit: int | None = None) -> None:
    if steps < 1 or (limit is not None and steps > limit):
        bound = f"lie in [1, {limit}]" if limit is not None else "be >= 1"
        raise ValueError(f"steps must {bound} for this sampler and schedule, got {steps}")
    if not 0 <= start_index < steps:
        raise ValueError(f"start_index must lie in [0, {steps - 1}] for {steps} steps, got {start_index}")


def after_step(callback: StepCallback | None, i: int, t: Tensor, x: Tensor, x0_pred: Tensor) -> Tensor:
    """Report step i to the callback; a tensor it returns replaces x (e.g. inpainting's known region)."""
    if callback is None:
        return x
    replaced = callback({"i": i, "t": t, "x": x, "x0_pred": x0_pred})
    if replaced is None:
        return x
    if replaced.shape != x.shape:
        raise ValueError(f"callback returned shape {tuple(replaced.shape)}, expected {tuple(x.shape)}")
    return replaced.to(device=x.device, dtype=x.dtype)
