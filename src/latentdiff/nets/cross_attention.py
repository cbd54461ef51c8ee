"""Cross-attention conditioning of the U-Net on text (Rombach et al. 2022, §3.3, eq. 3).

A `SpatialTransformer` takes the feature map φ(z_t) of one U-Net resolution as a sequence of tokens and
runs one transformer block over it: self-attention, then cross-attention
``Attention(Q, K, V) = softmax(Q Kᵀ / √d) V`` with ``Q = W_Q φ(z_t)``, ``K = W_K τ(y)``, ``V = W_V τ(y)``
(eq. 3; τ(y) the text encoder's token embeddings), then a GEGLU feed-forward (Shazeer 2020), each
pre-LayerNorm with a residual connection. Padding tokens of the prompt are masked out of the keys, so
they cannot change the output.

Module and parameter names follow diffusers' `Transformer2DModel` / `BasicTransformerBlock` / `Attention`
/ `FeedForward` (`norm`, `proj_in`, `transformer_blocks.0.{norm1,attn1,norm2,attn2,norm3,ff}`,
`proj_out`), so the text U-Net's state dict is a `UNet2DConditionModel` state dict.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from latentdiff.nets.group_norm import group_norm

LAYER_NORM_EPS = 1e-5  # diffusers' BasicTransformerBlock default (UNet2DConditionModel does not change it)
GROUP_NORM_EPS = 1e-6  # fixed in diffusers' Transformer2DModel


class Attention(nn.Module):
    """Multi-head attention of `query` tokens over `context` tokens (itself when None), Vaswani et al. 2017,
    eq. 1. `to_q/to_k/to_v` have no bias, `to_out.0` has one (diffusers' `Attention` defaults)."""

    def __init__(self, query_dim: int, heads: int, head_dim: int, context_dim: int | None = None) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim)])

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x (B, N, query_dim); context (B, L, context_dim); mask bool (B, L), True = attend."""
        context = x if context is None else context
        b, n, _ = x.shape
        split = lambda t: t.reshape(b, t.shape[1], self.heads, -1).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.to_q(x)), split(self.to_k(context)), split(self.to_v(context))
        attn_mask = None if mask is None else mask[:, None, None, :].to(torch.bool)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.to_out[0](out.transpose(1, 2).reshape(b, n, -1))


class GEGLU(nn.Module):
    """``a · GELU(b)`` with ``[a, b] = proj(x)`` (Shazeer 2020, eq. 6)."""

    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2 * inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden, gate = self.proj(x).chunk(2, dim=-1)
        return hidden * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU (4× width), dropout, linear: diffusers' `FeedForward(activation_fn="geglu")` as `net.0/1/2`."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * mult), nn.Dropout(dropout), nn.Linear(dim * mult, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.net:
            x = module(x)
        return x


class TransformerBlock(nn.Module):
    """Pre-LayerNorm self-attention, cross-attention to the context, feed-forward; residual after each
    (diffusers' `BasicTransformerBlock`, norm_type "layer_norm")."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn1 = Attention(dim, heads, head_dim)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn2 = Attention(dim, heads, head_dim, context_dim)
        self.norm3 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.ff = FeedForward(dim, dropout=dropout)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context, mask)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """A feature map (B, C, H, W) attends to text tokens: ``x + proj_out(Block(proj_in(GroupNorm(x))))``
    with the H·W pixels as tokens (Rombach et al. 2022, §3.3; diffusers' `Transformer2DModel` with 1×1
    convolutions as projections)."""

    def __init__(self, channels: int, heads: int, context_dim: int, groups: int = 32, dropout: float = 0.0):
        super().__init__()
        if heads <= 0 or channels % heads:
            raise ValueError(f"SpatialTransformer: {heads} heads must divide channels={channels}")
        self.norm = nn.GroupNorm(groups, channels, eps=GROUP_NORM_EPS)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList(
            [TransformerBlock(channels, heads, channels // heads, context_dim, dropout)]
        )
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x (B, C, H, W); context (B, L, context_dim) in x's dtype; mask bool (B, L), True = a real token."""
        b, c, height, width = x.shape
        norm = self.norm
        h = self.proj_in(group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps))
        tokens = h.permute(0, 2, 3, 1).reshape(b, height * width, c)
        for block in self.transformer_blocks:
            tokens = block(tokens, context.to(tokens.dtype), mask)
        h = tokens.reshape(b, height, width, c).permute(0, 3, 1, 2)
        return x + self.proj_out(h)
