"""Tensors in [-1, 1] to uint8 arrays, grids and PNG files (Pillow/numpy only)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """NCHW (or CHW) float in [-1, 1] → NHWC (or HWC) uint8, rounding like a PNG writer."""
    x = images.detach().float().cpu().clamp(-1, 1)
    x = ((x + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).numpy()


def to_pil(image: torch.Tensor | np.ndarray) -> Image.Image:
    """One image, CHW float in [-1, 1] or HWC uint8, to a PIL image (L for one channel, RGB for three)."""
    arr = to_uint8(image) if isinstance(image, torch.Tensor) else image
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return Image.fromarray(arr, mode="L" if arr.ndim == 2 else "RGB")


def make_grid(
    images: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: float = 1.0
) -> torch.Tensor:
    """Tile NCHW images into one CHW image, `nrow` images per row."""
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = torch.full(
        (c, rows * (h + padding) + padding, nrow * (w + padding) + padding), pad_value, dtype=images.dtype
    )
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, y : y + h, x : x + w] = images[i].detach().cpu()
    return grid


def save_grid(path: str | Path, images: torch.Tensor, nrow: int | None = None, upscale: int = 1) -> Path:
    """Write a grid PNG; `upscale` enlarges small images (nearest) so they can be looked at."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = to_pil(make_grid(images, nrow))
    if upscale > 1:
        img = img.resize((img.width * upscale, img.height * upscale), Image.NEAREST)
    img.save(path)
    return path


def save_images(folder: str | Path, images: torch.Tensor, names: Sequence[str] | None = None) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = names or [f"{i:05d}.png" for i in range(len(images))]
    paths = []
    for img, name in zip(images, names, strict=True):
        p = folder / name
        to_pil(img).save(p)
        paths.append(p)
    return paths
