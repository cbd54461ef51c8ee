"""Named sizes for the two stages: `tiny`, `small`, `base`, `large`.

An autoencoder preset fixes the width and depth of the KL autoencoder (its downsampling factor f comes from
the resolution, see `choose_f`); a backbone preset the width and depth of the U-Net (its number of levels
comes from the latent side). Training hyper-parameters are those of the demo's measured recipe (KL weight
1e-6 per image element, L2 reconstruction, AdamW with a cosine schedule fitted to the stage's time, bf16
autocast, EMA), which `benchmarks/sizing.py` times per preset. Measured speeds are in docs/benchmarks.md.
"""

from __future__ import annotations

import dataclasses
import math

from latentdiff.autoencoder.config import AutoencoderConfig
from latentdiff.autoencoder.losses import AutoencoderLossConfig
from latentdiff.diffusion.config import DiffusionConfig
from latentdiff.nets.unet import UNetConfig
from latentdiff.training.config import TrainConfig
from latentdiff.training.stages import AutoencoderStage, DataConfig, DiffusionStage

PRESET_NAMES = ("tiny", "small", "base", "large")

# width, residual blocks per level, GroupNorm groups, attention in the middle block
_AUTOENCODER = {
    "tiny": (16, 1, 8, False),
    "small": (32, 1, 16, False),
    "base": (64, 1, 32, False),
    "large": (64, 2, 32, True),
}
# width, residual blocks per level, attention at which levels (of 2 or 3), head channels
_UNET = {
    "tiny": (32, 1, "low", 32),
    "small": (64, 2, "low", 32),
    "base": (96, 2, "low", 32),
    "large": (128, 2, "two_low", 64),
}


# Stage 1 learning rate where measured better than 1e-3: the `tiny` autoencoder after 3.7 minutes
# reconstructs Fashion-MNIST at rFID 26.9 with 2e-3 against 30.2 with 1e-3 (N = 2,000; 1,921 and 1,748
# steps; 2,220 steps at 1e-3 reach only 28.4), and in a later pair 27.1 with 4e-3 against 28.0 with 2e-3
# (1,513 and 1,566 steps), benchmarks/stage1_variants.py. The larger presets keep 1e-3 (not measured).
AUTOENCODER_LR = {"tiny": 4e-3}


def check_preset(name: str, what: str = "size") -> str:
    if name not in PRESET_NAMES:
        raise ValueError(f"unknown {what} preset {name!r}; known: {', '.join(PRESET_NAMES)}")
    return name


def choose_f(resolution: int) -> int:
    """Downsampling factor: latents of side 8-16 for the small images this toolkit trains on a CPU
    (f = 4 up to 64 px, f = 8 above; 2 below 16 px), the range LDM found to balance compression and detail
    (Rombach et al. 2022, §4.1: f = 4-16)."""
    if resolution < 16:
        return 2
    return 4 if resolution <= 64 else 8


def autoencoder_config(
    preset: str, channels: int, resolution: int, f: int | None = None
) -> AutoencoderConfig:
    width, blocks, groups, mid_attention = _AUTOENCODER[check_preset(preset)]
    f = f or choose_f(resolution)
    levels = int(math.log2(f)) + 1
    mult = (1, 2, 4, 4, 4)[:levels]
    return AutoencoderConfig(
        kind="kl",
        in_channels=channels,
        base_channels=width,
        channel_mult=mult,
        num_res_blocks=blocks,
        latent_channels=4,
        mid_attention=mid_attention,
        groups=groups,
        # 1e-6 per image element (LDM's per-sample units, d = C·H·W), the weight the demo and the
        # autoencoder benchmark were measured with
        kl_weight=1e-6 * channels * resolution * resolution,
    )


def unet_config(preset: str, latent_side: int) -> UNetConfig:
    width, blocks, attention, heads = _UNET[check_preset(preset)]
    levels = 2 if latent_side <= 8 else 3
    mult = (1, 2) if levels == 2 else (1, 2, 2)
    attn = (levels - 1,) if attention == "low" or levels == 2 else (levels - 2, levels - 1)
    return UNetConfig(
        base_channels=width,
        channel_mult=mult,
        num_res_blocks=blocks,
        attention_levels=attn,
        head_channels=heads,
        groups=32 if width % 32 == 0 else 16,
    )


def autoencoder_stage(
    data: DataConfig,
    preset: str,
    channels: int,
    minutes: float = 0.0,
    f: int | None = None,
    device: str = "auto",
    seed: int = 0,
    steps: int = 6000,
) -> AutoencoderStage:
    """Stage 1 with a preset: trains for `minutes` (its cosine schedule fitted to them) when > 0, else for
    `steps` optimiser steps (a fixed amount of work, the same on every machine)."""
    steps = 1_000_000 if minutes > 0 else steps
    return AutoencoderStage(
        data=data,
        model=autoencoder_config(preset, channels, data.resolution, f),
        loss=AutoencoderLossConfig(recon_kind="l2", disc_weight=0.0),
        train=TrainConfig(
            steps=steps,
            batch_size=32,
            lr=AUTOENCODER_LR.get(preset, 1e-3),
            warmup_steps=min(100, steps // 2),
            lr_schedule="cosine",
            min_lr_ratio=0.02,
            ema_decay=0.998,
            precision="bf16",
            checkpoint_every=500,
            eval_every=0,
            sample_every=0,
            max_minutes=minutes,
            fit_to_time=minutes > 0,
            device=device,
            seed=seed,
        ),
        stats_images=10_000,
    )


def diffusion_stage(
    data: DataConfig,
    preset: str,
    latent_side: int,
    conditional: bool,
    minutes: float = 0.0,
    device: str = "auto",
    seed: int = 0,
    steps: int = 10_000,
    text: bool = False,
) -> DiffusionStage:
    """Stage 2 with a preset: EDM training (Karras et al. 2022: EDM preconditioning, log-normal σ, EDM loss
    weights; the better of the two U-Net recipes of benchmarks/backbones.py at equal time, FID 37.1 against
    40.5 for VP-ε with min-SNR), class (or caption) dropout 0.1; `text`: conditioned on captions with a
    text encoder trained jointly; `minutes` or `steps` as for Stage 1."""
    steps = 1_000_000 if minutes > 0 else steps
    return DiffusionStage(
        data=data,
        unet=unet_config(preset, latent_side),
        diffusion=DiffusionConfig(
            schedule="linear", prediction="edm", noise_sampling="log_normal", loss_weighting="edm"
        ),
        train=TrainConfig(
            steps=steps,
            batch_size=128 if latent_side <= 8 else 64,
            lr=1e-3 if latent_side <= 8 else 4e-4,
            warmup_steps=min(100, steps // 2),
            lr_schedule="cosine",
            ema_decay=0.999,
            precision="bf16",
            checkpoint_every=500,
            sample_every=0,
            max_minutes=minutes,
            fit_to_time=minutes > 0,
            device=device,
            seed=seed,
        ),
        conditional="text" if text else "yes" if conditional else "no",
        cond_dropout={"class": 0.1, "text": 0.1},
    )


def with_minutes(stage, minutes: float):
    """The same stage trained for `minutes` of wall clock (schedule fitted to them)."""
    train = dataclasses.replace(stage.train, steps=1_000_000, max_minutes=minutes, fit_to_time=True)
    return dataclasses.replace(stage, train=train)
