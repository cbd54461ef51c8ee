"""The text encoder τ_θ of text-to-image latent diffusion (Rombach et al. 2022, §3.3 and §4.3): token ids →
one embedding per token, which the U-Net's cross-attention reads.

`kind="trained"` is the LDM recipe: a small transformer (Vaswani et al. 2017) trained jointly with the
diffusion model from scratch on the captions: token + learned position embeddings, pre-LayerNorm
blocks whose self-attention masks out padding, a final LayerNorm. `kind="wordllama"` starts from the
frozen token embeddings that the `wordllama` package ships inside its wheel (MIT licence; Llama-2
vocabulary, 256 dimensions), read from the wheel when a run is created and saved with it, never
downloaded; its `layers` trainable blocks on top (0: the frozen embeddings alone) learn word order.

A folder `text_encoder/` holds `config.json` + `model.safetensors` (+ `ema.safetensors`), like every model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from latentdiff.config import to_dict
from latentdiff.io.model_folder import FolderModel

FORMAT = "latentdiff.text_encoder"
VERSION = 1


@dataclass
class TextEncoderConfig:
    """Sizes of the text encoder; `vocab_size`, `max_length` and `pad_id` come from the tokenizer."""

    kind: Literal["trained", "wordllama"] = "trained"
    width: int = 128
    layers: int = 2
    heads: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.0
    vocab_size: int = 0
    max_length: int = 32
    pad_id: int = 0

    def __post_init__(self) -> None:
        if self.width <= 0 or self.heads <= 0 or self.width % self.heads:
            raise ValueError(f"text encoder: heads={self.heads} must divide width={self.width} (both > 0)")
        if self.layers < 0 or self.mlp_ratio <= 0 or self.max_length < 3:
            raise ValueError(
                f"text encoder: layers >= 0, mlp_ratio > 0 and max_length >= 3 required, got "
                f"{self.layers}, {self.mlp_ratio}, {self.max_length}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"text encoder: dropout must be in [0, 1), got {self.dropout}")


class EncoderBlock(nn.Module):
    """Pre-LayerNorm transformer block: masked multi-head self-attention and an MLP, residual after each."""

    def __init__(self, width: int, heads: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, mlp_ratio * width),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(mlp_ratio * width, width),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        x = x + self.proj(out.transpose(1, 2).reshape(b, n, c))
        return x + self.mlp(self.norm2(x))


class TextEncoder(
    FolderModel, nn.Module, folder_format=FORMAT, version=VERSION, config_class=TextEncoderConfig
):
    """``forward(ids (B, L) int64) -> (embeddings (B, L, width), mask bool (B, L))``; mask = not padding.

    Padding tokens are masked out of every attention, so the embeddings of the real tokens do not depend
    on what the padded positions hold."""

    def __init__(self, config: TextEncoderConfig) -> None:
        super().__init__()
        self.config = cfg = config
        if cfg.vocab_size <= 0:
            raise ValueError("text encoder: vocab_size must be set from the tokenizer")
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.position_embedding = nn.Parameter(torch.randn(cfg.max_length, cfg.width) * 0.02)
        self.blocks = nn.ModuleList(
            [EncoderBlock(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.layers)]
        )
        self.final_norm = nn.LayerNorm(cfg.width)
        if cfg.kind == "wordllama":
            self.token_embedding.requires_grad_(False)  # frozen: the package's pretrained embeddings

    @property
    def width(self) -> int:
        return self.config.width

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        if ids.ndim != 2 or ids.shape[1] > cfg.max_length:
            raise ValueError(f"token ids must be (B, L <= {cfg.max_length}), got {tuple(ids.shape)}")
        ids = ids.long()
        if bool(((ids < 0) | (ids >= cfg.vocab_size)).any()):
            raise ValueError(f"token ids must lie in 0..{cfg.vocab_size - 1} (this tokenizer's vocabulary)")
        mask = ids != cfg.pad_id
        x = self.token_embedding(ids).float()
        if cfg.kind == "wordllama" and not self.blocks:
            return x, mask  # the frozen embeddings as they are
        x = x + self.position_embedding[: ids.shape[1]]
        for block in self.blocks:
            x = block(x, mask)
        return self.final_norm(x), mask

    # ------------------------------------------------------------------------------------------- checkpoints
    def config_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, **to_dict(self.config)}
