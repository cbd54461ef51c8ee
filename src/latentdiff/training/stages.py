"""Configuration of the two training stages (one dataclass each, YAML in and out)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from latentdiff.autoencoder.config import AutoencoderConfig
from latentdiff.autoencoder.losses import AutoencoderLossConfig
from latentdiff.data.dataset import check_resolution
from latentdiff.diffusion.config import DiffusionConfig
from latentdiff.diffusion.guidance import check_guidance_scale
from latentdiff.nets.dit import DiTConfig
from latentdiff.nets.unet import UNetConfig
from latentdiff.training.config import TrainConfig


@dataclass
class DataConfig:
    """Which images a stage trains on: a built-in name (`fashion-mnist`, `emoji`, `mnist`, `digits`) or a
    folder. `resolution`/`channels` of None keep the data's own; `eval_split` feeds held-out metrics."""

    dataset: str = "fashion-mnist"
    split: str = "train"
    resolution: int | None = 32
    channels: int | None = None
    flip: bool = False
    limit: int | None = None
    eval_split: str = "test"
    eval_images: int = 256

    def __post_init__(self) -> None:
        if self.resolution is not None:  # refused when the configuration is read, before any work
            check_resolution(self.resolution)


@dataclass
class TextConfig:
    """Text conditioning (Stage 2 with `conditional` "text", or "auto" on captioned data): a tokenizer of
    at most `vocab_size` tokens learned from the training captions, prompts of `max_length` tokens, and the
    text encoder: `encoder` "trained" (a transformer of `layers` blocks, `width` channels, `heads` heads,
    trained jointly with the backbone) or "wordllama" (the frozen token embeddings of the `wordllama`
    package, 256 wide, with `layers` trainable blocks on top; its own tokenizer)."""

    encoder: Literal["trained", "wordllama"] = "trained"
    vocab_size: int = 2048
    max_length: int = 32
    width: int = 128
    layers: int = 2
    heads: int = 4

    def __post_init__(self) -> None:
        if self.vocab_size < 8 or self.max_length < 3:
            raise ValueError(
                f"text.vocab_size must be >= 8 and text.max_length >= 3, got {self.vocab_size}, "
                f"{self.max_length}"
            )


@dataclass
class AutoencoderStage:
    """Stage 1: train the perceptual-compression autoencoder, then measure its latent statistics."""

    data: DataConfig = field(default_factory=DataConfig)
    model: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    loss: AutoencoderLossConfig = field(default_factory=lambda: AutoencoderLossConfig(disc_weight=0.0))
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            steps=6000,
            batch_size=64,
            lr=4e-4,
            warmup_steps=200,
            lr_schedule="cosine",
            ema_decay=0.999,
            checkpoint_every=1000,
            eval_every=1000,
            sample_every=1000,
        )
    )
    stats_images: int = 10_000
    per_channel_stats: bool = False
    shift: Literal["mean", "zero"] = "mean"


@dataclass
class DiffusionStage:
    """Stage 2: a diffusion backbone on the (scaled) latents of the frozen autoencoder.

    `backbone` picks the network (`unet` or `dit`, `nets.backbones`); only its own section (`unet:` or
    `dit:`) applies, and its in/out channels, sample size and number of classes are filled in from the
    latent cache. `conditional="auto"` trains a text-conditioned model when the data has captions
    (`text` section; the U-Net gains cross-attention), else a class-conditional one when it has labels;
    "yes" = class labels, "text" = captions, "no" = unconditional. `cond_dropout` is, per conditioning
    key, the fraction of training rows given the null instead (the empty caption for "text";
    classifier-free guidance, Ho & Salimans 2022).
    """

    data: DataConfig = field(default_factory=DataConfig)
    backbone: Literal["unet", "dit"] = "unet"
    unet: UNetConfig = field(
        default_factory=lambda: UNetConfig(
            base_channels=64, channel_mult=(1, 2, 2), attention_levels=(1, 2), head_channels=32
        )
    )
    dit: DiTConfig = field(default_factory=DiTConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            steps=8000,
            batch_size=128,
            lr=3e-4,
            warmup_steps=200,
            ema_decay=0.999,
            checkpoint_every=1000,
            sample_every=1000,
        )
    )
    conditional: Literal["auto", "yes", "no", "text"] = "auto"
    cond_dropout: dict[str, float] = field(default_factory=lambda: {"class": 0.1, "text": 0.1})
    text: TextConfig = field(default_factory=TextConfig)
    encode_batch_size: int = 256
    sample_sampler: str = "dpmpp_2m"
    sample_steps: int = 20
    sample_guidance: float = 2.0

    def __post_init__(self) -> None:
        check_guidance_scale(self.sample_guidance, "sample_guidance", negative=None)
        for key, rate in self.cond_dropout.items():
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"cond_dropout.{key} must be in [0, 1), got {rate}")
