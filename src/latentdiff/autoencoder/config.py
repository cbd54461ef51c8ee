"""Configuration of the Stage 1 autoencoder (one dataclass for the KL, VQ and identity kinds)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

AutoencoderKind = Literal["kl", "vq", "identity"]

SUPPORTED_DOWNSAMPLE_FACTORS = (1, 2, 4, 8, 16)

# channel multipliers of the LDM autoencoders (Rombach et al. 2022, appendix G) for each downsample factor
PRESET_CHANNEL_MULT: dict[int, tuple[int, ...]] = {
    1: (1,),
    2: (1, 2),
    4: (1, 2, 4),
    8: (1, 2, 4, 4),
    16: (1, 2, 4, 4, 4),
}


@dataclass
class AutoencoderConfig:
    """Architecture, regularisation and latent scaling of a Stage 1 autoencoder.

    The downsample factor is f = 2^(len(channel_mult) − 1); level i has base_channels·channel_mult[i]
    channels. `identity` ignores the architecture fields: it is the pixel-space baseline (f = 1, the
    latent is the image), so its latent_channels must equal in_channels. For `vq` the latent that Stage 2
    sees is the quantized one, with `codebook_dim` channels (default: latent_channels).

    `kl_weight` (kind `kl`) has LDM's meaning (Rombach et al. 2022, appendix G, eq. 25, where both terms
    are per-sample sums): the weight of KL(q(z|x) ‖ N(0, I)), summed over the latent, against the
    reconstruction error summed over the d = C·H·W image elements, per image. Training minimises the
    per-element-mean reconstruction plus kl_weight·KL/d, which is that objective divided by d (see
    `Autoencoder`), so a weight carries over from LDM unchanged, whatever the image size.

    Diffusion runs on ``(z − shift_factor)·scale_factor``; both are scalars or per-channel lists, set from
    data by `latentdiff.autoencoder.stats.apply_latent_stats` (which records `latent_stats_images`).
    """

    kind: AutoencoderKind = "kl"
    in_channels: int = 3
    resolution: int = 32  # training resolution; informational (the networks are fully convolutional)
    base_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    latent_channels: int = 4
    mid_attention: bool = True
    dropout: float = 0.0
    groups: int = 32  # GroupNorm groups; must divide every level's channel count
    # kl: the encoder predicts mean and log-variance (2·latent_channels). False gives a deterministic
    # posterior (std = 0, no KL term), as diffusers' `DiagonalGaussianDistribution(deterministic=True)`.
    double_z: bool = True
    logvar_min: float = -30.0
    logvar_max: float = 20.0
    kl_weight: float = 1e-6  # LDM's value, in its per-sample units (see above)
    # vq (van den Oord et al. 2017)
    codebook_size: int = 1024
    codebook_dim: int | None = None
    commitment_beta: float = 0.25
    ema_codebook: bool = True
    ema_decay: float = 0.99
    ema_epsilon: float = 1e-5  # Laplace smoothing of the EMA cluster sizes
    # a code whose EMA usage (expected assignments per training batch) falls below the threshold is
    # restarted from a recent encoder output; 0 disables restarts
    dead_code_threshold: float = 1.0
    restart_every: int = 1  # training forward passes between dead-code checks
    restart_buffer_size: int = 4096  # recent encoder outputs kept as restart candidates
    # latent scaling for Stage 2
    scale_factor: float | list[float] = 1.0
    shift_factor: float | list[float] = 0.0
    latent_stats_images: int = 0  # how many images the scale/shift statistics came from (0: not computed)

    def __post_init__(self) -> None:
        self.channel_mult = tuple(self.channel_mult)
        self._validate()

    # ------------------------------------------------------------------------------------------ derived

    @property
    def downsample_factor(self) -> int:
        return 1 if self.kind == "identity" else 2 ** (len(self.channel_mult) - 1)

    @property
    def latent_dim(self) -> int:
        """Channels of the latent that Stage 2 sees (the quantized latent for `vq`)."""
        if self.kind == "identity":
            return self.in_channels
        if self.kind == "vq":
            return self.codebook_dim if self.codebook_dim is not None else self.latent_channels
        return self.latent_channels

    @property
    def block_channels(self) -> tuple[int, ...]:
        return tuple(self.base_channels * m for m in self.channel_mult)

    # --------------------------------------------------------------------------------------- validation

    def _validate(self) -> None:
        def bad(key: str, why: str) -> ValueError:
            return ValueError(f"autoencoder.{key}={getattr(self, key)!r}: {why}")

        if self.kind not in ("kl", "vq", "identity"):
            raise bad("kind", "must be 'kl', 'vq' or 'identity'")
        if self.in_channels not in (1, 3):
            raise bad("in_channels", "must be 1 (grayscale) or 3 (RGB)")
        if self.latent_channels < 1:
            raise bad("latent_channels", "must be at least 1")
        if self.kind == "identity":
            # the identity's latent is the image: like the other architecture fields, latent_channels does
            # not apply, so it follows in_channels instead of making every caller set it
            self.latent_channels = self.in_channels
        for key in ("scale_factor", "shift_factor"):
            value = getattr(self, key)
            if isinstance(value, list | tuple):
                if len(value) != self.latent_dim:
                    raise bad(
                        key, f"a per-channel list needs {self.latent_dim} values (one per latent channel)"
                    )
                if key == "scale_factor" and any(v == 0 or not math.isfinite(v) for v in value):
                    raise bad(key, "every entry must be finite and non-zero")
            elif key == "scale_factor" and (value == 0 or not math.isfinite(value)):
                raise bad(key, "must be finite and non-zero")
        if self.kind == "identity":
            return
        if not self.channel_mult or any(m < 1 for m in self.channel_mult):
            raise bad("channel_mult", "needs at least one level, each multiplier >= 1")
        f = 2 ** (len(self.channel_mult) - 1)
        if f not in SUPPORTED_DOWNSAMPLE_FACTORS:
            raise bad(
                "channel_mult",
                f"{len(self.channel_mult)} levels give a downsample factor f={f}; supported f are "
                f"{list(SUPPORTED_DOWNSAMPLE_FACTORS)} (1 to 5 levels)",
            )
        if self.base_channels < 1:
            raise bad("base_channels", "must be at least 1")
        if self.num_res_blocks < 1:
            raise bad("num_res_blocks", "must be at least 1")
        if self.groups < 1:
            raise bad("groups", "must be at least 1")
        for level, ch in enumerate(self.block_channels):
            if ch % self.groups:
                raise bad(
                    "groups",
                    f"GroupNorm groups must divide every level's channels, but level {level} has "
                    f"{ch} channels (base_channels={self.base_channels} × channel_mult[{level}]="
                    f"{self.channel_mult[level]})",
                )
        if not 0.0 <= self.dropout < 1.0:
            raise bad("dropout", "must be in [0, 1)")
        if self.logvar_min >= self.logvar_max:
            raise bad("logvar_min", f"must be below logvar_max ({self.logvar_max})")
        if self.kl_weight < 0:
            raise bad("kl_weight", "must be >= 0")
        if self.kind == "vq":
            if self.codebook_size < 2:
                raise bad("codebook_size", "must be at least 2")
            if self.codebook_dim is not None and self.codebook_dim < 1:
                raise bad("codebook_dim", "must be at least 1 (or null for latent_channels)")
            if self.commitment_beta < 0:
                raise bad("commitment_beta", "must be >= 0")
            if not 0.0 < self.ema_decay < 1.0:
                raise bad("ema_decay", "must be in (0, 1)")
            if self.ema_epsilon <= 0:
                raise bad("ema_epsilon", "must be > 0")
            if self.dead_code_threshold < 0:
                raise bad("dead_code_threshold", "must be >= 0 (0 disables restarts)")
            if self.restart_every < 1:
                raise bad("restart_every", "must be at least 1")
            if self.restart_buffer_size < 1:
                raise bad("restart_buffer_size", "must be at least 1")

    # ------------------------------------------------------------------------------------------ presets

    @classmethod
    def kl(
        cls,
        f: int = 4,
        latent_channels: int = 4,
        in_channels: int = 3,
        base_channels: int = 64,
        **overrides: Any,
    ) -> AutoencoderConfig:
        """KL-regularised autoencoder with downsample factor `f` (LDM's KL-f4 / KL-f8 layouts)."""
        return cls(
            kind="kl",
            in_channels=in_channels,
            latent_channels=latent_channels,
            base_channels=base_channels,
            channel_mult=_preset_mult(f),
            **overrides,
        )

    @classmethod
    def vq(
        cls,
        f: int = 4,
        latent_channels: int = 3,
        codebook_size: int = 1024,
        in_channels: int = 3,
        base_channels: int = 64,
        **overrides: Any,
    ) -> AutoencoderConfig:
        """Vector-quantized autoencoder with downsample factor `f` (LDM's VQ-f4: 3 channels, 8192 codes)."""
        return cls(
            kind="vq",
            in_channels=in_channels,
            latent_channels=latent_channels,
            codebook_size=codebook_size,
            base_channels=base_channels,
            channel_mult=_preset_mult(f),
            **overrides,
        )

    @classmethod
    def identity(cls, in_channels: int = 3, **overrides: Any) -> AutoencoderConfig:
        """Pixel space: the latent is the image itself (f = 1)."""
        return cls(kind="identity", in_channels=in_channels, latent_channels=in_channels, **overrides)


def _preset_mult(f: int) -> tuple[int, ...]:
    if f not in PRESET_CHANNEL_MULT:
        raise ValueError(
            f"downsample factor f={f} is not supported; choose one of {list(PRESET_CHANNEL_MULT)}"
        )
    return PRESET_CHANNEL_MULT[f]
