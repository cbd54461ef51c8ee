"""Convolutional encoder and decoder of the Stage 1 autoencoder (Rombach et al. 2022, appendix G; after
Esser et al. 2021): ResNet blocks with GroupNorm + SiLU, one optional self-attention in the middle block.

Module names and layer order are those of diffusers' `Encoder` / `Decoder` (the ones `AutoencoderKL`
builds from `DownEncoderBlock2D` / `UpDecoderBlock2D`), so an `AutoencoderKL` state dict loads by name:
`conv_in`, `down_blocks[i].resnets[j]`, `down_blocks[i].downsamplers[0].conv`, `mid_block.resnets[0..1]`,
`mid_block.attentions[0]`, `up_blocks[i].resnets[j]`, `up_blocks[i].upsamplers[0].conv`,
`conv_norm_out`, `conv_out`. The decoder's `up_blocks[0]` works at the lowest resolution.

Both run channels-last inside (weights and activations; faster convolutions, and the channels-last
GroupNorm of `nets.group_norm` on the CPU) and take and return ordinary NCHW tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from latentdiff.nets.blocks import Downsample, ResBlock, SelfAttention, Upsample, group_norm_silu

NORM_EPS = 1e-6


def resnet_stack(
    in_channels: int, out_channels: int, num_layers: int, groups: int, dropout: float
) -> nn.ModuleList:
    """`num_layers` ResBlocks without time conditioning; the first changes the width."""
    return nn.ModuleList(
        ResBlock(
            in_channels if i == 0 else out_channels,
            out_channels,
            dropout=dropout,
            groups=groups,
            eps=NORM_EPS,
        )
        for i in range(num_layers)
    )


class DownEncoderBlock(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        downsample: bool,
        groups: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.resnets = resnet_stack(in_channels, out_channels, num_layers, groups, dropout)
        # stride-2 conv after a (0, 1, 0, 1) pad, as the LDM / diffusers AutoencoderKL encoder
        self.downsamplers = (
            nn.ModuleList([Downsample(out_channels, asymmetric_padding=True)]) if downsample else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
        return x


class UpDecoderBlock(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        upsample: bool,
        groups: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.resnets = resnet_stack(in_channels, out_channels, num_layers, groups, dropout)
        self.upsamplers = nn.ModuleList([Upsample(out_channels)]) if upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class MidBlock(nn.Module):
    """resnet → (single-head self-attention) → resnet at the lowest resolution."""

    def __init__(self, channels: int, attention: bool, groups: int, dropout: float) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            ResBlock(channels, channels, dropout=dropout, groups=groups, eps=NORM_EPS) for _ in range(2)
        )
        self.attentions = nn.ModuleList(
            [SelfAttention(channels, head_channels=channels, groups=groups, eps=NORM_EPS)]
            if attention
            else []
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x)
        if len(self.attentions):
            x = self.attentions[0](x)
        return self.resnets[1](x)


class Encoder(nn.Module):
    """Image (N, in_channels, H, W) → features (N, out_channels, H/f, W/f), f = 2^(len(block_channels)−1)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        block_channels: Sequence[int],
        num_res_blocks: int,
        groups: int = 32,
        mid_attention: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        block_channels = list(block_channels)
        self.conv_in = nn.Conv2d(in_channels, block_channels[0], 3, padding=1)
        levels = len(block_channels)
        self.down_blocks = nn.ModuleList(
            DownEncoderBlock(
                block_channels[max(i - 1, 0)],
                block_channels[i],
                num_res_blocks,
                i < levels - 1,
                groups,
                dropout,
            )
            for i in range(levels)
        )
        self.mid_block = MidBlock(block_channels[-1], mid_attention, groups, dropout)
        self.conv_norm_out = nn.GroupNorm(groups, block_channels[-1], eps=NORM_EPS)
        self.conv_out = nn.Conv2d(block_channels[-1], out_channels, 3, padding=1)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x.contiguous(memory_format=torch.channels_last))
        for block in self.down_blocks:
            h = block(h)
        h = self.mid_block(h)
        return self.conv_out(group_norm_silu(self.conv_norm_out, h)).contiguous()


class Decoder(nn.Module):
    """Latent (N, in_channels, h, w) → image (N, out_channels, h·f, w·f); each level has
    num_res_blocks + 1 ResNet blocks, as in the LDM decoder."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        block_channels: Sequence[int],
        num_res_blocks: int,
        groups: int = 32,
        mid_attention: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        reversed_channels = list(reversed(block_channels))
        self.conv_in = nn.Conv2d(in_channels, reversed_channels[0], 3, padding=1)
        self.mid_block = MidBlock(reversed_channels[0], mid_attention, groups, dropout)
        levels = len(reversed_channels)
        self.up_blocks = nn.ModuleList(
            UpDecoderBlock(
                reversed_channels[max(i - 1, 0)],
                reversed_channels[i],
                num_res_blocks + 1,
                i < levels - 1,
                groups,
                dropout,
            )
            for i in range(levels)
        )
        self.conv_norm_out = nn.GroupNorm(groups, reversed_channels[-1], eps=NORM_EPS)
        self.conv_out = nn.Conv2d(reversed_channels[-1], out_channels, 3, padding=1)
        self.to(memory_format=torch.channels_last)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid_block(self.conv_in(z.contiguous(memory_format=torch.channels_last)))
        for block in self.up_blocks:
            h = block(h)
        return self.conv_out(group_norm_silu(self.conv_norm_out, h)).contiguous()
