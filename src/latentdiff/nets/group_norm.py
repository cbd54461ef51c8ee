"""Group normalization (Wu & He 2018, eq. 1-3) that is fast on channels-last CPU tensors.

PyTorch's own channels-last GroupNorm kernel is ~10× slower on CPU than the contiguous one when groups
hold few channels (2 channels per group at 64 channels / 32 groups), which would eat the gain of
channels-last convolutions. Channels-last CPU tensors therefore run the same maths as PyTorch operators:
per-channel reductions over the pixels (vectorised across the contiguous channel dimension) merged
exactly per group, the affine map as one fused multiply-add with a per-(sample, channel) scale and shift,
and the backward pass written out instead of traced. The affine may be per sample, which absorbs the
diffusion time "scale-shift" modulation (Dhariwal & Nichol 2021, sec. 3), so ``norm(h)·(1+s)+t`` is one
pass over `h`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


def _pixels(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) channels-last -> (B, H·W, C) view."""
    b, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, h * w, c)


def _group_stats(xv: torch.Tensor, groups: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(sample, channel) expanded group mean and 1/std of a (B, N, C) tensor, in float32 or wider.

    Centred channel variances (two passes, no cancellation) merged per group with the parallel-variance
    identity var_g = mean_c(var_c) + var_c(mean_c) (equal counts per channel).
    """
    b, _, c = xv.shape
    acc = torch.promote_types(xv.dtype, torch.float32)
    mean_c = xv.mean(1, dtype=acc)
    var_c = (xv - mean_c[:, None]).square_().mean(1)
    mean_c, var_c = mean_c.view(b, groups, -1), var_c.view(b, groups, -1)
    mean_g = mean_c.mean(-1, keepdim=True)
    var_g = var_c.mean(-1, keepdim=True) + (mean_c - mean_g).square().mean(-1, keepdim=True)
    rstd_g = torch.rsqrt(var_g + eps)
    per_group = (b, groups, c // groups)
    return mean_g.expand(per_group).reshape(b, c), rstd_g.expand(per_group).reshape(b, c)


def _affine(
    mean: torch.Tensor, rstd: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) of shape (B, 1, C) with GroupNorm(x) = x·scale + shift."""
    scale = rstd * weight
    return scale[:, None], (bias - mean * scale)[:, None]


def _inference_group_norm(
    x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float, silu: bool
) -> torch.Tensor:
    """No-autograd path: compute in float32 (PyTorch's bf16 elementwise kernels are the slower ones on
    CPU), apply SiLU in place, round to the input's dtype once."""
    xv = _pixels(x)
    own = xv.dtype != torch.float32 and xv.dtype != torch.float64
    x32 = xv.float() if own else xv
    scale, shift = _affine(*_group_stats(x32, groups, eps), weight.float(), bias.float())
    y = torch.addcmul(shift, x32, scale, out=x32) if own else torch.addcmul(shift, x32, scale)
    if silu:
        F.silu(y, inplace=True)
    b, c, h, w = x.shape
    return y.to(x.dtype).view(b, h, w, c).permute(0, 3, 1, 2)


class _ChannelsLastGroupNorm(torch.autograd.Function):
    """y = (x - mean_g) / std_g * weight + bias with `weight`, `bias` of shape (C,) or (B, C)."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float
    ) -> torch.Tensor:
        b, c, h, w = x.shape
        xv = _pixels(x)
        mean, rstd = _group_stats(xv, groups, eps)
        scale, shift = _affine(mean, rstd, weight, bias)
        y = torch.empty_like(x, dtype=torch.promote_types(x.dtype, weight.dtype))
        torch.addcmul(shift, xv, scale, out=_pixels(y))
        ctx.groups = groups
        ctx.save_for_backward(x, weight, mean, rstd)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, mean, rstd = ctx.saved_tensors
        b, c, h, w = x.shape
        groups = ctx.groups
        xv = _pixels(x)
        gv = _pixels(grad.contiguous(memory_format=torch.channels_last))
        acc = torch.promote_types(x.dtype, torch.float32)
        sum_g = gv.sum(1, dtype=acc)  # Σ_n dy          (B, C)
        sum_gx = (gv * xv).sum(1, dtype=acc)  # Σ_n dy·x        (B, C)
        grad_weight = rstd * (sum_gx - mean * sum_g)  # Σ_n dy·x̂       (B, C)
        gamma = weight.expand(b, c)
        count = h * w * (c // groups)

        def per_group(v: torch.Tensor) -> torch.Tensor:
            return v.view(b, groups, -1).sum(-1, keepdim=True).expand(b, groups, c // groups).reshape(b, c)

        # dx = r·γ·dy − (r/M)·Σ_g γ·Σdy − x̂·(r/M)·Σ_g γ·Σdy·x̂   (Wu & He 2018 backward, M = group size)
        coef_x = -rstd.square() * per_group(gamma * grad_weight) / count
        coef_0 = -coef_x * mean - rstd * per_group(gamma * sum_g) / count
        dx = None
        if ctx.needs_input_grad[0]:
            dx = torch.addcmul(coef_0[:, None].to(x.dtype), xv, coef_x[:, None].to(x.dtype))
            dx.addcmul_(gv, (rstd * gamma)[:, None].to(x.dtype))
            dx = dx.view(b, h, w, c).permute(0, 3, 1, 2)

        def reduce_like(g: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
            return g.sum(0) if like.ndim == 1 else g

        dweight = reduce_like(grad_weight, weight).to(weight.dtype) if ctx.needs_input_grad[1] else None
        dbias = reduce_like(sum_g, weight).to(weight.dtype) if ctx.needs_input_grad[2] else None
        return dx, dweight, dbias, None, None


def group_norm(
    x: torch.Tensor,
    groups: int,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
    *,
    silu: bool = False,
) -> torch.Tensor:
    """GroupNorm of a (B, C, H, W) tensor with affine `weight`, `bias` of shape (C,) or per sample (B, C),
    followed by SiLU when `silu`.

    Channels-last CPU tensors take the operator paths above; others PyTorch's kernel (+ one multiply-add
    for a per-sample affine).
    """
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    if x.device.type == "cpu" and x.ndim == 4 and channels_last:
        recording = torch.is_grad_enabled() and (
            x.requires_grad or weight.requires_grad or bias.requires_grad
        )
        if recording:
            y = _ChannelsLastGroupNorm.apply(x, weight, bias, groups, eps)
            return F.silu(y) if silu else y
        return _inference_group_norm(x, groups, weight, bias, eps, silu)
    if weight.ndim == 1:
        y = F.group_norm(x, groups, weight, bias, eps)
    else:
        y = F.group_norm(x, groups, None, None, eps)
        y = torch.addcmul(bias[:, :, None, None].to(y.dtype), y, weight[:, :, None, None].to(y.dtype))
    return F.silu(y, inplace=not y.requires_grad) if silu else y
