"""PatchGAN discriminator (Isola et al. 2017, "Image-to-Image Translation with Conditional Adversarial
Networks", sec. 3.2.2 and appendix 6.1.2), the adversarial critic of the LDM / VQGAN autoencoders.

Layout (C64-C128-C256-C512 for n_layers = 3): a 4×4 stride-2 conv + LeakyReLU(0.2), n_layers − 1 more
4×4 stride-2 conv + norm + LeakyReLU with doubling channels (capped at 8×), one 4×4 stride-1 conv + norm +
LeakyReLU, and a 4×4 stride-1 conv to one logit per patch.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
from torch import nn

log = logging.getLogger(__name__)

DiscriminatorNorm = Literal["batch", "group", "none"]


def patch_output_size(resolution: int, n_layers: int) -> int:
    """Side of the logit map for a `resolution`² input: n_layers halvings (k4 s2 p1), then two k4 s1 p1
    convolutions that each remove one pixel."""
    size = resolution
    for _ in range(n_layers):
        size = (size + 2 - 4) // 2 + 1
    return size - 2


def fit_n_layers(resolution: int, n_layers: int = 3, min_output: int = 2) -> int:
    """Largest n ≤ `n_layers` whose logit map is at least `min_output`² for this resolution (e.g. 3 for
    32×32 → 2×2 patches, 2 for 28×28 → 5×5, where 3 layers would leave a single 1×1 logit)."""
    for n in range(n_layers, 0, -1):
        if patch_output_size(resolution, n) >= min_output:
            return n
    raise ValueError(
        f"PatchDiscriminator: a {resolution}×{resolution} input is too small for a {min_output}×{min_output} "
        f"logit map even with one layer (needs at least 8 pixels)"
    )


def _norm(kind: DiscriminatorNorm, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(32, channels), channels)
    return nn.Identity()


class PatchDiscriminator(nn.Module):
    """Maps images (N, in_channels, H, W) to patch logits (N, 1, h, w).

    With `resolution` given, `n_layers` is lowered (never raised) by `fit_n_layers` so that the logit map
    stays at least 2×2; the number actually used is `self.n_layers`. Weights follow the pix2pix init
    (conv N(0, 0.02), norm scale N(1, 0.02)).
    """

    def __init__(
        self,
        in_channels: int = 3,
        channels: int = 64,
        n_layers: int = 3,
        *,
        resolution: int | None = None,
        norm: DiscriminatorNorm = "batch",
    ) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"PatchDiscriminator: n_layers must be at least 1, got {n_layers}")
        if resolution is not None:
            fitted = fit_n_layers(resolution, n_layers)
            if fitted != n_layers:
                log.info(
                    "PatchDiscriminator: %d layers for %dpx inputs (instead of %d)",
                    fitted,
                    resolution,
                    n_layers,
                )
            n_layers = fitted
        self.n_layers = n_layers
        use_bias = norm == "none"  # a norm's shift makes the conv bias redundant
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(channels * prev, channels * mult, 4, stride, 1, bias=use_bias),
                _norm(norm, channels * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(channels * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d | nn.GroupNorm):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
