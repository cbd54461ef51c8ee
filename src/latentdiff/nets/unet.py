"""The Stage 2 denoising U-Net (Ho et al. 2020, appendix B; Dhariwal & Nichol 2021 improvements).

The module tree mirrors diffusers' `UNet2DModel` (`conv_in`, `time_embedding.linear_1/2`,
`class_embedding`, `down_blocks.i.{resnets,attentions,downsamplers}`, `mid_block`, `up_blocks`,
`conv_norm_out`, `conv_out`), so its state dict *is* a `UNet2DModel` state dict; `nets.unet_diffusers_format`
writes the matching diffusers config.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from latentdiff.config import to_dict
from latentdiff.io.model_folder import FolderModel
from latentdiff.nets import conditioning
from latentdiff.nets.blocks import (
    Downsample,
    ResBlock,
    SelfAttention,
    Upsample,
    group_norm_silu,
    timestep_embedding,
)
from latentdiff.nets.cross_attention import SpatialTransformer

FORMAT = "latentdiff.unet"
VERSION = 1


@dataclass
class UNetConfig:
    """Architecture of the U-Net plus two runtime options (`gradient_checkpointing`, `channels_last`).

    Level `i` runs at 1/2**i of the input resolution with ``base_channels * channel_mult[i]`` channels.
    Self-attention follows every ResBlock of the levels in `attention_levels` (down and up path alike);
    the middle block is ResBlock-Attention-ResBlock (ResBlock-ResBlock without `mid_attention`).
    Heads have `head_channels` channels each, or there are `num_heads` of them; neither: one head.
    `num_classes > 0` adds a label embedding with a learned null class at index `num_classes`
    (classifier-free guidance, Ho & Salimans 2022).
    `cross_attention_dim` (the width of the text encoder's token embeddings) makes it text-conditioned:
    every attention layer becomes a transformer block with self-attention, cross-attention to the text
    tokens and a feed-forward (`nets.cross_attention`, Rombach et al. 2022, §3.3), diffusers'
    `UNet2DConditionModel` layout.
    """

    in_channels: int = 4
    out_channels: int = 4
    sample_size: int = 32
    base_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (2,)
    mid_attention: bool = True
    head_channels: int | None = 64
    num_heads: int | None = None
    dropout: float = 0.0
    groups: int = 32
    eps: float = 1e-6
    num_classes: int = 0
    scale_shift: bool = True
    flip_sin_to_cos: bool = True
    freq_shift: float = 0.0
    cross_attention_dim: int | None = None
    gradient_checkpointing: bool = False
    channels_last: bool = True

    def __post_init__(self) -> None:
        levels = len(self.channel_mult)
        if levels == 0 or any(m <= 0 for m in self.channel_mult):
            raise ValueError(
                f"channel_mult must be a non-empty list of positive integers, got {self.channel_mult}"
            )
        for name in ("in_channels", "out_channels", "base_channels", "num_res_blocks", "groups"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        bad = [lvl for lvl in self.attention_levels if not 0 <= lvl < levels]
        if bad or len(set(self.attention_levels)) != len(self.attention_levels):
            raise ValueError(
                f"attention_levels {self.attention_levels} must be distinct level indices in 0..{levels - 1}"
            )
        for ch in self.level_channels:
            if ch % self.groups:
                raise ValueError(
                    f"groups={self.groups} must divide every level's channels {self.level_channels}"
                )
        if self.head_channels is not None and self.num_heads is not None:
            raise ValueError("set head_channels or num_heads, not both")
        for ch in self.attention_channels:
            per_head = self.head_channels or (ch // self.num_heads if self.num_heads else ch)
            if per_head <= 0 or ch % per_head or (self.num_heads and ch % self.num_heads):
                which = "head_channels" if self.head_channels is not None else "num_heads"
                raise ValueError(f"{which} must divide the channels of every attention layer ({ch})")
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {self.num_classes}")
        if self.cross_attention_dim is not None and self.cross_attention_dim <= 0:
            raise ValueError(f"cross_attention_dim must be positive or None, got {self.cross_attention_dim}")
        if self.cross_attention_dim is not None and not self.attention_channels:
            raise ValueError(
                "a text-conditioned U-Net (cross_attention_dim) needs attention_levels or mid_attention"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.sample_size <= 0 or self.sample_size % 2 ** (levels - 1):
            raise ValueError(
                f"sample_size={self.sample_size} must be a positive multiple of {2 ** (levels - 1)}"
            )

    @property
    def size_multiple(self) -> int:
        """Latent sides the network takes: multiples of this (each of the levels below the first halves
        them); convolutions and attention work at any such size, not only at `sample_size`."""
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def level_channels(self) -> tuple[int, ...]:
        return tuple(self.base_channels * m for m in self.channel_mult)

    @property
    def attention_channels(self) -> list[int]:
        """Channel counts of all attention layers (levels in `attention_levels`, then the middle)."""
        chans = [self.level_channels[lvl] for lvl in sorted(self.attention_levels)]
        return chans + ([self.level_channels[-1]] if self.mid_attention else [])

    @property
    def temb_channels(self) -> int:
        return 4 * self.base_channels

    def heads(self, channels: int) -> int:
        """Number of attention heads of a layer with `channels` channels."""
        if self.head_channels is not None:
            return channels // self.head_channels
        return self.num_heads or 1


class TimestepMLP(nn.Module):
    """Linear-SiLU-Linear on the sinusoidal embedding (diffusers' `TimestepEmbedding` names)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_features, out_features)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(out_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class Level(nn.Module):
    """One resolution of the down or up path: `resnets`, optional `attentions` after each, and an optional
    resampler (`downsamplers.0` / `upsamplers.0`, diffusers' names)."""

    def __init__(
        self,
        resnets: list[ResBlock],
        attentions: list[nn.Module],
        downsample: Downsample | None = None,
        upsample: Upsample | None = None,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(resnets)
        self.attentions = nn.ModuleList(attentions)
        self.downsamplers = nn.ModuleList([downsample]) if downsample is not None else None
        self.upsamplers = nn.ModuleList([upsample]) if upsample is not None else None


class MidBlock(nn.Module):
    def __init__(self, resnets: list[ResBlock], attentions: list[nn.Module]) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(resnets)
        self.attentions = nn.ModuleList(attentions)


class UNet(FolderModel, nn.Module, folder_format=FORMAT, version=VERSION, config_class=UNetConfig):
    """The U-Net backbone (`nets.backbones`): ``forward(x, c_noise, cond=None) -> Tensor`` of shape
    ``(B, out_channels, H, W)``.

    `c_noise` is an int/float or a tensor, scalar or (B,), fractional values allowed (a timestep, or
    ¼ ln σ under EDM preconditioning). ``cond["class"]`` absent (or the index `num_classes`) selects the
    learned null class. For bf16 inference cast the module
    (``unet.to(torch.bfloat16)``): inputs are cast to the weights' dtype and outputs back to the input's.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = cfg = config
        chans = cfg.level_channels
        temb = cfg.temb_channels
        levels = len(chans)

        def resblock(cin: int, cout: int) -> ResBlock:
            return ResBlock(
                cin,
                cout,
                temb_channels=temb,
                dropout=cfg.dropout,
                groups=cfg.groups,
                eps=cfg.eps,
                scale_shift=cfg.scale_shift,
            )

        def attention(ch: int) -> nn.Module:
            if cfg.cross_attention_dim is not None:
                return SpatialTransformer(ch, cfg.heads(ch), cfg.cross_attention_dim, cfg.groups, cfg.dropout)
            return SelfAttention(
                ch, head_channels=cfg.head_channels, num_heads=cfg.num_heads, groups=cfg.groups, eps=cfg.eps
            )

        self.conv_in = nn.Conv2d(cfg.in_channels, chans[0], 3, padding=1)
        self.time_embedding = TimestepMLP(chans[0], temb)
        self.class_embedding = nn.Embedding(cfg.num_classes + 1, temb) if cfg.num_classes > 0 else None

        skip_chans = [chans[0]]
        self.down_blocks = nn.ModuleList()
        ch = chans[0]
        for lvl, cout in enumerate(chans):
            resnets, attns = [], []
            for _ in range(cfg.num_res_blocks):
                resnets.append(resblock(ch, cout))
                ch = cout
                if lvl in cfg.attention_levels:
                    attns.append(attention(ch))
                skip_chans.append(ch)
            down = Downsample(ch) if lvl < levels - 1 else None
            if down is not None:
                skip_chans.append(ch)
            self.down_blocks.append(Level(resnets, attns, downsample=down))

        self.mid_block = MidBlock(
            [resblock(ch, ch), resblock(ch, ch)], [attention(ch)] if cfg.mid_attention else []
        )

        self.up_blocks = nn.ModuleList()
        for lvl in reversed(range(levels)):
            cout = chans[lvl]
            resnets, attns = [], []
            for _ in range(cfg.num_res_blocks + 1):
                resnets.append(resblock(ch + skip_chans.pop(), cout))
                ch = cout
                if lvl in cfg.attention_levels:
                    attns.append(attention(ch))
            self.up_blocks.append(Level(resnets, attns, upsample=Upsample(ch) if lvl > 0 else None))

        self.conv_norm_out = nn.GroupNorm(cfg.groups, ch, eps=cfg.eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(ch, cfg.out_channels, 3, padding=1)
        if cfg.channels_last:
            self.to(memory_format=torch.channels_last)

    @property
    def null_class(self) -> int:
        """Label index of the unconditional ("null") class used for classifier-free guidance."""
        return self.config.num_classes

    def _run(self, module: nn.Module, *args: torch.Tensor) -> torch.Tensor:
        if self.config.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(module, *args, use_reentrant=False)
        return module(*args)

    @property
    def cond_keys(self) -> tuple[str, ...]:
        """The conditioning keys this U-Net takes (`nets.conditioning`)."""
        keys = (conditioning.CLASS,) if self.class_embedding is not None else ()
        if self.config.cross_attention_dim is not None:
            keys += (conditioning.TEXT_EMBEDDINGS, conditioning.TEXT_MASK)
        return keys

    def _attend(self, module: nn.Module, h: torch.Tensor, text: tuple) -> torch.Tensor:
        return (
            self._run(module, h, *text)
            if self.config.cross_attention_dim is not None
            else self._run(module, h)
        )

    def null_cond(self, cond: conditioning.Condition) -> dict[str, torch.Tensor]:
        """The learned unconditional counterpart of `cond` (classifier-free guidance)."""
        cond = conditioning.check_keys(cond, self.cond_keys, "this U-Net")
        return conditioning.null_condition(cond, self.null_class)

    def _embed(
        self,
        c_noise: torch.Tensor | float | int,
        cond: conditioning.Condition | None,
        batch: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        t = torch.as_tensor(c_noise, device=device)
        if t.ndim == 0:
            t = t.expand(batch)
        elif t.shape != (batch,):
            raise ValueError(f"c_noise must be a scalar or of shape ({batch},), got {tuple(t.shape)}")
        cfg = self.config
        sinusoid = timestep_embedding(
            t,
            self.conv_in.out_channels,
            flip_sin_to_cos=cfg.flip_sin_to_cos,
            downscale_freq_shift=cfg.freq_shift,
        )
        emb = self.time_embedding(sinusoid.to(dtype))
        cond = conditioning.check_keys(cond, self.cond_keys, "this U-Net")
        if self.class_embedding is None:
            return emb
        return emb + self.class_embedding(conditioning.class_labels(cond, self.null_class, batch, device))

    def forward(
        self,
        x: torch.Tensor,
        c_noise: torch.Tensor | float | int,
        cond: conditioning.Condition | None = None,
    ) -> torch.Tensor:
        cfg = self.config
        b, c, height, width = x.shape
        factor = 2 ** (len(cfg.channel_mult) - 1)
        if c != cfg.in_channels or height % factor or width % factor:
            raise ValueError(
                f"U-Net input must be (B, {cfg.in_channels}, H, W) with H, W multiples of {factor}, "
                f"got {tuple(x.shape)}"
            )
        dtype = self.conv_in.weight.dtype
        h = x.to(dtype, memory_format=torch.channels_last if cfg.channels_last else torch.preserve_format)
        emb = self._embed(c_noise, cond, b, x.device, dtype)
        text = (
            conditioning.text_context(cond or {}, b, cfg.cross_attention_dim)
            if cfg.cross_attention_dim
            else ()
        )

        h = self.conv_in(h)
        skips = [h]
        for level in self.down_blocks:
            for i, resnet in enumerate(level.resnets):
                h = self._run(resnet, h, emb)
                if len(level.attentions):
                    h = self._attend(level.attentions[i], h, text)
                skips.append(h)
            if level.downsamplers is not None:
                h = level.downsamplers[0](h)
                skips.append(h)

        mid = self.mid_block
        h = self._run(mid.resnets[0], h, emb)
        if len(mid.attentions):
            h = self._attend(mid.attentions[0], h, text)
        h = self._run(mid.resnets[1], h, emb)

        for level in self.up_blocks:
            for i, resnet in enumerate(level.resnets):
                h = self._run(resnet, torch.cat([h, skips.pop()], dim=1), emb)
                if len(level.attentions):
                    h = self._attend(level.attentions[i], h, text)
            if level.upsamplers is not None:
                h = level.upsamplers[0](h)

        h = self.conv_out(group_norm_silu(self.conv_norm_out, h))
        return h.to(x.dtype).contiguous()

    # ------------------------------------------------------------------------------------------- checkpoints

    def config_dict(self) -> dict:
        """What `config.json` holds: the format tag and the configuration."""
        return {"format": FORMAT, "version": VERSION, "backbone": "unet", **to_dict(self.config)}
