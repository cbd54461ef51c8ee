"""Latent scale and shift statistics, stored in the autoencoder's config.

Stage 2 trains on (z − shift)·scale. With scale = 1/std and shift = mean of the latents that Stage 2 will
see (posterior samples for KL, quantized latents for VQ, pixels for identity), those have zero mean and
unit variance, which the noise schedule assumes (Rombach et al. 2022, sec. 4.3.2 and appendix D.1).
Computing std from a single batch (CompVis `scale_by_std`) or hard-coding 0.18215 is the usual trap: the
statistics here come from up to `num_images` images drawn by a fixed seeded permutation of the dataset.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Literal, Protocol

import torch
from tqdm.auto import tqdm

from latentdiff.autoencoder.model import Autoencoder

log = logging.getLogger(__name__)

LatentShift = Literal["mean", "zero"]


class BatchDataset(Protocol):
    def __len__(self) -> int: ...

    def get_batch(self, indices: list[int]) -> tuple[torch.Tensor, Any]: ...


@torch.no_grad()
def compute_latent_stats(
    autoencoder: Autoencoder,
    dataset: BatchDataset,
    num_images: int = 10_000,
    batch_size: int = 256,
    per_channel: bool = False,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """Mean and standard deviation of the latents of min(len(dataset), num_images) images.

    The images are the first ones of a permutation drawn from `generator` (default: seed 0), visited in
    index order; KL latents are posterior samples drawn from the same generator. The model runs in eval
    mode (VQ statistics are not updated). Returns ``{"mean", "std", "num_images", "per_channel"}`` where
    mean/std are floats, or lists with one value per latent channel when `per_channel`; std is the unbiased
    estimate over all latent elements (per channel).
    """
    total = len(dataset)
    if total == 0:
        raise ValueError("compute_latent_stats: the dataset is empty")
    if num_images < 1 or batch_size < 1:
        raise ValueError(
            f"compute_latent_stats: num_images ({num_images}) and batch_size ({batch_size}) must be >= 1"
        )
    count_images = min(total, num_images)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    chosen = torch.randperm(total, generator=generator)[:count_images].sort().values.tolist()

    device = autoencoder.device
    channels = autoencoder.latent_channels
    sums = torch.zeros(channels, dtype=torch.float64, device=device)
    squares = torch.zeros(channels, dtype=torch.float64, device=device)
    elements = 0  # per channel
    was_training = autoencoder.training
    autoencoder.eval()
    try:
        with tqdm(total=count_images, desc="latent statistics", unit="img", disable=None) as bar:
            for start in range(0, count_images, batch_size):
                batch = chosen[start : start + batch_size]
                images, _ = dataset.get_batch(batch)
                if images.shape[0] != len(batch):
                    raise ValueError(
                        f"compute_latent_stats: get_batch returned {images.shape[0]} images "
                        f"for {len(batch)} indices"
                    )
                z = autoencoder.encode(images.to(device=device, dtype=torch.float32)).sample(generator)
                z = z.double()
                sums += z.sum(dim=(0, 2, 3))
                squares += z.square().sum(dim=(0, 2, 3))
                elements += z.shape[0] * z.shape[2] * z.shape[3]
                bar.update(len(batch))
    finally:
        autoencoder.train(was_training)

    if per_channel:
        mean = sums / elements
        var = (squares - elements * mean.square()) / max(elements - 1, 1)
        mean_out: float | list[float] = mean.tolist()
        std_out: float | list[float] = var.clamp_min(0).sqrt().tolist()
    else:
        n = elements * channels
        mean_all = sums.sum() / n
        var_all = (squares.sum() - n * mean_all.square()) / max(n - 1, 1)
        mean_out, std_out = float(mean_all), float(var_all.clamp_min(0).sqrt())
    log.info("latent statistics over %d images: mean %s, std %s", count_images, mean_out, std_out)
    return {"mean": mean_out, "std": std_out, "num_images": count_images, "per_channel": per_channel}


def apply_latent_stats(autoencoder: Autoencoder, stats: dict[str, Any], shift: LatentShift = "mean") -> None:
    """Store scale_factor = 1/std and shift_factor = mean (or 0 with ``shift="zero"``) in the
    autoencoder's config, and the number of images they came from in `latent_stats_images`."""
    std, mean = stats["std"], stats["mean"]
    stds = std if isinstance(std, list) else [std]
    if any(not math.isfinite(s) or s <= 0 for s in stds):
        raise ValueError(f"apply_latent_stats: std must be positive and finite, got {std}")
    if shift not in ("mean", "zero"):
        raise ValueError(f"apply_latent_stats: shift must be 'mean' or 'zero', got {shift!r}")
    scale = [1.0 / s for s in std] if isinstance(std, list) else 1.0 / std
    if shift == "zero":
        offset: float | list[float] = [0.0] * len(mean) if isinstance(mean, list) else 0.0
    else:
        offset = list(mean) if isinstance(mean, list) else float(mean)
    autoencoder.config = dataclasses.replace(
        autoencoder.config,
        scale_factor=scale,
        shift_factor=offset,
        latent_stats_images=int(stats["num_images"]),
    )
