"""The Diffusion Transformer backbone (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers").

The latent is cut into p×p patches (sec. 3.2 "Patchify") with a fixed 2-D sin-cos position embedding; N
blocks of self-attention and an MLP are conditioned by adaLN-Zero (sec. 3.2 "DiT block design"): from the
sum c of the noise-level and class embeddings each block regresses the scale γ and shift β of
``LayerNorm(h)·(1 + γ) + β`` and a gate α on each residual branch, all zero-initialised so that every
block starts as the identity and the network outputs zero. A final adaLN layer and a linear
decoder give p·p·C values per patch, which are rearranged back into the latent (sec. 3.2 "Transformer
decoder"). Only the ε/v/x0 output is predicted (no learned Σ), so ``out_channels == in_channels``.

Text conditioning (`cross_attention_dim`): every block gains a cross-attention layer from the tokens to
the text encoder's embeddings between its self-attention and its MLP, ``h + CrossAttn(LayerNorm(h),
τ(y))`` with the prompt's padding masked out (Rombach et al. 2022, §3.3, eq. 3, placed in a DiT as in
PixArt-α, Chen et al. 2024, sec. 2.3); its output projection starts at zero, so each block still starts as
the identity.

Conventions follow the reference implementation as diffusers' `DiTTransformer2DModel` mirrors them
(`nets.dit_diffusers_format` converts between the two): the noise-level sinusoid is diffusers'
``Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=1)``, and inputs of another size than
`sample_size` get positions spread over the training grid's range (diffusers' `PatchEmbed`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from latentdiff.config import to_dict
from latentdiff.io.model_folder import FolderModel
from latentdiff.nets import conditioning
from latentdiff.nets.blocks import timestep_embedding
from latentdiff.nets.cross_attention import Attention
from latentdiff.nets.unet import TimestepMLP

FORMAT = "latentdiff.dit"
VERSION = 1
EPS = 1e-6  # every LayerNorm (the reference implementation's value)

# name -> (hidden_size, depth, num_heads); S, B, L, XL are DiT-S/B/L/XL of the paper's Table 1
DIT_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 64, "depth": 2, "num_heads": 2},
    "XS": {"hidden_size": 256, "depth": 6, "num_heads": 4},
    "S": {"hidden_size": 384, "depth": 12, "num_heads": 6},
    "B": {"hidden_size": 768, "depth": 12, "num_heads": 12},
    "L": {"hidden_size": 1024, "depth": 24, "num_heads": 16},
    "XL": {"hidden_size": 1152, "depth": 28, "num_heads": 16},
}


@dataclass
class DiTConfig:
    """Architecture of the DiT plus one runtime option (`gradient_checkpointing`, per block).

    A `sample_size`² latent becomes (sample_size / patch_size)² tokens of width `hidden_size`; `depth`
    blocks with `num_heads` heads and an MLP of ``mlp_ratio·hidden_size`` units. `num_classes > 0` adds a
    label embedding with a learned null class at index `num_classes` (classifier-free guidance, Ho &
    Salimans 2022). `frequency_embedding_size` is the width of the noise-level sinusoid.
    `cross_attention_dim` (the text encoder's width) adds cross-attention to text in every block.
    """

    in_channels: int = 4
    out_channels: int = 4
    sample_size: int = 8
    patch_size: int = 2
    hidden_size: int = 256
    depth: int = 6
    num_heads: int = 4
    mlp_ratio: float = 4.0
    num_classes: int = 0
    frequency_embedding_size: int = 256
    cross_attention_dim: int | None = None
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "cross_attention_dim" and value is None:
                continue
            if f.name not in ("num_classes", "gradient_checkpointing") and value <= 0:
                raise ValueError(f"{f.name} must be positive, got {value}")
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {self.num_classes}")
        if self.out_channels != self.in_channels:
            raise ValueError(
                f"out_channels={self.out_channels} must equal in_channels={self.in_channels} "
                "(the DiT predicts ε/v/x0 only, no learned variance)"
            )
        for name, divisor in (("sample_size", "patch_size"), ("hidden_size", "num_heads")):
            if getattr(self, name) % getattr(self, divisor):
                raise ValueError(
                    f"{name}={getattr(self, name)} must be a multiple of {divisor}={getattr(self, divisor)}"
                )
        if self.hidden_size % 4:
            raise ValueError(f"hidden_size={self.hidden_size} must be a multiple of 4 (2-D sin-cos)")
        if int(self.hidden_size * self.mlp_ratio) <= 0:
            raise ValueError(f"mlp_ratio={self.mlp_ratio} leaves the MLP without units")

    @property
    def size_multiple(self) -> int:
        """Latent sides the network takes: multiples of `patch_size` (another grid than `sample_size`'s gets
        its positions spread over the training grid's range)."""
        return self.patch_size

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> DiTConfig:
        """The `DIT_PRESETS[name]` sizes (DiT-S/B/L/XL of Table 1, or `tiny`/`XS`) with `overrides`."""
        if name not in DIT_PRESETS:
            raise ValueError(f"unknown DiT preset {name!r}; valid presets: {', '.join(DIT_PRESETS)}")
        return cls(**{**DIT_PRESETS[name], **overrides})


@functools.lru_cache(maxsize=16)
def sincos_positions(grid_h: int, grid_w: int, base: int, dim: int) -> Tensor:
    """(grid_h·grid_w, dim) fixed 2-D sin-cos embedding (MAE's, used by DiT sec. 3.2), row-major tokens.

    The first half of the channels encodes the column, the second the row, each as ``[sin, cos]`` of
    ``pos · 10000**(-i / (dim/4))``; positions are ``arange(n) · base / n`` so that any grid spans the range
    of the `base`×`base` training grid (diffusers' `get_2d_sincos_pos_embed`, same float32/float64 steps).
    Cached: do not modify the result in place.
    """
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))

    def embed(n: int) -> Tensor:
        angles = torch.outer((torch.arange(n, dtype=torch.float32) / (n / base)).double(), omega)
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    rows, cols = embed(grid_h), embed(grid_w)
    cols = cols[None, :, :].expand(grid_h, -1, -1)
    rows = rows[:, None, :].expand(-1, grid_w, -1)
    return torch.cat([cols, rows], dim=-1).reshape(grid_h * grid_w, dim).float()


def modulate(h: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: ``h·(1 + scale) + shift`` with per-sample (B, 1, D) shift and scale."""
    return h * (1 + scale) + shift


class DiTBlock(nn.Module):
    """Pre-norm transformer block with adaLN-Zero conditioning (Peebles & Xie 2023, sec. 3.2, Fig. 3)."""

    def __init__(self, hidden: int, num_heads: int, mlp_hidden: int, context_dim: int | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.modulation = nn.Linear(hidden, 6 * hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        if context_dim is not None:
            self.cross_norm = nn.LayerNorm(hidden, eps=EPS)
            self.cross_attn = Attention(hidden, num_heads, hidden // num_heads, context_dim)
        self.fc1 = nn.Linear(hidden, mlp_hidden)
        self.fc2 = nn.Linear(mlp_hidden, hidden)

    def attention(self, h: Tensor) -> Tensor:
        b, n, d = h.shape
        q, k, v = self.qkv(h).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))

    def forward(
        self, h: Tensor, c: Tensor, context: Tensor | None = None, mask: Tensor | None = None
    ) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(F.silu(c))[:, None].chunk(6, dim=-1)
        h = h + gate1 * self.attention(modulate(F.layer_norm(h, h.shape[-1:], eps=EPS), shift1, scale1))
        if context is not None:
            h = h + self.cross_attn(self.cross_norm(h), context.to(h.dtype), mask)
        mlp_in = modulate(F.layer_norm(h, h.shape[-1:], eps=EPS), shift2, scale2)
        return h + gate2 * self.fc2(F.gelu(self.fc1(mlp_in), approximate="tanh"))


class DiT(FolderModel, nn.Module, folder_format=FORMAT, version=VERSION, config_class=DiTConfig):
    """``forward(x, c_noise, cond=None) -> Tensor`` shaped like x = (B, in_channels, H, W), H and W
    multiples of `patch_size`.

    `c_noise` is a number or a tensor, scalar or (B,), fractional and negative values allowed. `cond` maps
    ``"class"`` to int64 labels when `num_classes > 0` (absent, or index `num_classes`: the null class).
    For bf16 inference cast the module (``dit.to(torch.bfloat16)``): inputs are cast to the weights' dtype
    and the output back to the input's.
    """

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = cfg = config
        d = cfg.hidden_size
        self.patch_embed = nn.Conv2d(cfg.in_channels, d, cfg.patch_size, stride=cfg.patch_size)
        self.time_embed = TimestepMLP(cfg.frequency_embedding_size, d)
        self.class_embed = nn.Embedding(cfg.num_classes + 1, d) if cfg.num_classes > 0 else None
        mlp_hidden = int(d * cfg.mlp_ratio)
        self.blocks = nn.ModuleList(
            DiTBlock(d, cfg.num_heads, mlp_hidden, cfg.cross_attention_dim) for _ in range(cfg.depth)
        )
        self.final_modulation = nn.Linear(d, 2 * d)
        self.final_linear = nn.Linear(d, cfg.patch_size**2 * cfg.out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The paper's initialisation (sec. 3.2, reference `initialize_weights`): xavier-uniform linears and
        patch projection, N(0, 0.02²) label table and noise-level MLP, zero adaLN-Zero and output layers."""
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Conv2d):
                nn.init.xavier_uniform_(m.weight.view(m.weight.shape[0], -1))
                if m.bias is not None:  # cross-attention's q/k/v projections have none
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.time_embed.linear_1.weight, std=0.02)
        nn.init.normal_(self.time_embed.linear_2.weight, std=0.02)
        if self.class_embed is not None:
            nn.init.normal_(self.class_embed.weight, std=0.02)
        for layer in [*(b.modulation for b in self.blocks), self.final_modulation, self.final_linear]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        for block in self.blocks:  # cross-attention starts silent too: every block begins as the identity
            if hasattr(block, "cross_attn"):
                nn.init.zeros_(block.cross_attn.to_out[0].weight)
                nn.init.zeros_(block.cross_attn.to_out[0].bias)

    @property
    def cond_keys(self) -> tuple[str, ...]:
        keys = (conditioning.CLASS,) if self.config.num_classes > 0 else ()
        if self.config.cross_attention_dim is not None:
            keys += (conditioning.TEXT_EMBEDDINGS, conditioning.TEXT_MASK)
        return keys

    def null_cond(self, cond: conditioning.Condition) -> dict[str, Tensor]:
        """The learned unconditional counterpart of `cond` (the null class), same batch."""
        cond = conditioning.check_keys(cond, self.cond_keys, "this DiT")
        return conditioning.null_condition(cond, self.config.num_classes)

    def _embed(self, c_noise: Tensor | float, cond: dict[str, Tensor], batch: int, x: Tensor) -> Tensor:
        """c = MLP(sinusoid(c_noise)) + class embedding, (B, hidden_size)."""
        t = torch.as_tensor(c_noise, device=x.device)
        t = t.expand(batch) if t.ndim == 0 else t
        if t.shape != (batch,):
            raise ValueError(f"c_noise must be a scalar or of shape ({batch},), got {tuple(t.shape)}")
        freq = timestep_embedding(t, self.config.frequency_embedding_size, downscale_freq_shift=1)
        c = self.time_embed(freq.to(self.patch_embed.weight.dtype))
        if self.class_embed is not None:
            labels = conditioning.class_labels(cond, self.config.num_classes, batch, x.device)
            c = c + self.class_embed(labels)
        return c

    def forward(
        self, x: Tensor, c_noise: Tensor | float, cond: conditioning.Condition | None = None
    ) -> Tensor:
        cfg, p = self.config, self.config.patch_size
        if x.ndim != 4 or x.shape[1] != cfg.in_channels or x.shape[2] % p or x.shape[3] % p:
            raise ValueError(
                f"DiT input must be (B, {cfg.in_channels}, H, W) with H and W multiples of "
                f"patch_size={p}, got {tuple(x.shape)}"
            )
        cond = conditioning.check_keys(cond, self.cond_keys, "this DiT")
        b, gh, gw = x.shape[0], x.shape[2] // p, x.shape[3] // p
        c = self._embed(c_noise, cond, b, x)
        text = conditioning.text_context(cond, b, cfg.cross_attention_dim) if cfg.cross_attention_dim else ()

        h = self.patch_embed(x.to(self.patch_embed.weight.dtype)).flatten(2).transpose(1, 2)
        pos = sincos_positions(gh, gw, cfg.sample_size // p, cfg.hidden_size)
        h = (h + pos.to(h.device)).to(h.dtype)
        for block in self.blocks:
            if cfg.gradient_checkpointing and self.training and torch.is_grad_enabled():
                h = checkpoint(block, h, c, *text, use_reentrant=False)
            else:
                h = block(h, c, *text)

        shift, scale = self.final_modulation(F.silu(c))[:, None].chunk(2, dim=-1)
        h = self.final_linear(modulate(F.layer_norm(h, h.shape[-1:], eps=EPS), shift, scale))
        h = h.reshape(b, gh, gw, p, p, cfg.out_channels).permute(0, 5, 1, 3, 2, 4)  # unpatchify
        return h.reshape(b, cfg.out_channels, gh * p, gw * p).to(x.dtype)

    # ------------------------------------------------------------------------------------------- checkpoints

    def config_dict(self) -> dict[str, Any]:
        """What `config.json` holds: the format tag, the backbone name and the configuration."""
        return {"format": FORMAT, "version": VERSION, "backbone": "dit", **to_dict(self.config)}
