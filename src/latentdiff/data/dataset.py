"""The one dataset interface of Stage 1 and of latent encoding: uint8 pixels in, float tensors in [-1, 1] out.

Every dataset keeps (or decodes on demand) uint8 images (N, C, H, W) and int64 labels; `get_batch` turns
any set of indices into a float32 NCHW batch in one vectorised step. Random horizontal flips draw from
torch's global RNG (so a resumed run that restores the RNG state flips the same images), unless the caller
passes its own flip mask.
"""

from __future__ import annotations

import difflib
import numbers
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

Indices = Sequence[int] | np.ndarray | torch.Tensor

MAX_RESOLUTION = 4096


def check_resolution(resolution: object, name: str = "resolution") -> int:
    """`resolution` as an int if it is a whole number of pixels in 1..`MAX_RESOLUTION`, else a ValueError
    naming `name` and the command-line flag that sets it."""
    if (
        isinstance(resolution, bool)
        or not isinstance(resolution, numbers.Integral)
        or not 1 <= resolution <= MAX_RESOLUTION
    ):
        raise ValueError(
            f"{name}={resolution!r}: the image side must be a whole number of pixels from 1 to "
            f"{MAX_RESOLUTION} (--resolution)"
        )
    return int(resolution)


def physical_memory() -> int | None:
    """Bytes of RAM on this machine (None where the platform does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_fits_in_memory(name: str, count: int, channels: int, resolution: int) -> None:
    """Refuse, before allocating, `count` uint8 images of `channels` × `resolution`² px that would not fit
    in this machine's memory, naming the flags that shrink them."""
    need = count * channels * resolution * resolution
    total = physical_memory()
    if total is not None and need > total:
        raise ValueError(
            f"{name}: {count} images of {channels}×{resolution}×{resolution} px take {need / 2**30:.1f} GiB "
            f"in memory, more than this machine's {total / 2**30:.1f} GiB: lower --resolution (now "
            f"{resolution}) or use fewer images (--limit)"
        )


def spread_indices(count: int, limit: int | None) -> np.ndarray:
    """`limit` indices spread evenly over `range(count)` (all of them when `limit` is None or larger).

    Evenly spaced rather than the first `limit`, so that a set stored sorted by class keeps every class.
    """
    if limit is None or limit >= count:
        return np.arange(count)
    if limit <= 0:
        raise ValueError(f"limit must be a positive number of images, got {limit}")
    return (np.arange(limit, dtype=np.int64) * count) // limit


def uint8_to_float(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) → float32 in [-1, 1] (0 → -1, 255 → +1 exactly)."""
    if isinstance(images, np.ndarray):
        # memory-mapped caches are read-only; torch wants a writable buffer, and the float copy follows anyway
        images = np.ascontiguousarray(images) if images.flags.writeable else np.array(images)
        x = torch.from_numpy(images)
    else:
        x = images
    return x.to(torch.float32).div_(127.5).sub_(1.0)


class ImageDataset(Dataset, ABC):
    """`(image float32 CHW in [-1, 1], label int)` items; label 0 when the set is unlabelled.

    Subclasses store `labels` (int64, N) and implement `uint8_batch`. `split_rule`: how an image folder's
    split was chosen, in words (`ImageFolder`; None for the built-in sets, whose splits are their own).
    `captions`: per image a list of captions (possibly empty), or None when the data has no captions
    (`data.captions`; text-to-image).
    """

    split_rule: str | None = None
    captions: list[list[str]] | None = None

    def __init__(
        self,
        *,
        name: str,
        split: str = "train",
        resolution: int,
        channels: int,
        labels: np.ndarray,
        class_names: Sequence[str] = (),
        flip: bool = False,
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"{name}: channels must be 1 or 3, got {channels}")
        check_resolution(resolution, f"{name}: resolution")
        self.name = name
        self.split = split
        self.resolution = int(resolution)
        self.channels = int(channels)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_names = list(class_names)
        self.flip = bool(flip)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, images={len(self)}, "
            f"shape=({self.channels}, {self.resolution}, {self.resolution}), classes={self.num_classes}, "
            f"flip={self.flip})"
        )

    @abstractmethod
    def uint8_batch(self, indices: np.ndarray) -> np.ndarray:
        """uint8 images (len(indices), C, H, W) of valid, non-negative `indices` (never flipped)."""

    def check_indices(self, indices: Indices) -> np.ndarray:
        """Indices as a non-negative int64 array; negative ones count from the end like a list."""
        if isinstance(indices, torch.Tensor):
            indices = indices.detach().cpu().numpy()
        idx = np.asarray(indices)
        if idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
            raise TypeError(
                f"{self.name}: expected a 1-D sequence of integer indices, got {idx.dtype} {idx.shape}"
            )
        idx = idx.astype(np.int64)
        n = len(self)
        bad = (idx < -n) | (idx >= n)
        if bad.any():
            raise IndexError(f"{self.name}: index {int(idx[bad][0])} out of range for {n} images")
        return np.where(idx < 0, idx + n, idx)

    def get_batch(
        self, indices: Indices, flip: bool | torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(images float32 NCHW in [-1, 1], labels int64 N) for `indices`.

        `flip`: None uses the dataset's setting (random horizontal flips from torch's global RNG when it
        is on), False never flips, True flips at random, a bool tensor (N,) flips exactly those rows.
        """
        idx = self.check_indices(indices)
        images = uint8_to_float(self.uint8_batch(idx))
        if flip is None:
            flip = self.flip
        if isinstance(flip, torch.Tensor):
            mask = flip.to(device="cpu", dtype=torch.bool)
            if mask.shape != (len(idx),):
                raise ValueError(f"{self.name}: flip mask of shape {tuple(mask.shape)} for {len(idx)} images")
        elif flip:
            mask = torch.rand(len(idx)) < 0.5
        else:
            mask = None
        if mask is not None and mask.any():
            images[mask] = images[mask].flip(-1)
        return images, torch.from_numpy(self.labels[idx])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        images, labels = self.get_batch([index])
        return images[0], int(labels[0])


class ArrayImageDataset(ImageDataset):
    """A dataset whose decoded images are all held in one uint8 array (N, C, H, W)."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        name: str,
        split: str = "train",
        class_names: Sequence[str] = (),
        flip: bool = False,
    ) -> None:
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[2] != images.shape[3]:
            raise ValueError(
                f"{name}: expected square uint8 images (N, C, H, W), got {images.dtype} {images.shape}"
            )
        if len(images) != len(labels):
            raise ValueError(f"{name}: {len(images)} images but {len(labels)} labels")
        super().__init__(
            name=name,
            split=split,
            resolution=images.shape[-1],
            channels=images.shape[1],
            labels=labels,
            class_names=class_names,
            flip=flip,
        )
        self.images = images

    def uint8_batch(self, indices: np.ndarray) -> np.ndarray:
        return self.images[indices]


def class_index(dataset: ImageDataset, name_or_index: str | int) -> int:
    """Resolve a class name (case-insensitive, e.g. "sneaker") or an index (int or digits) to an index."""
    names = dataset.class_names
    if not names:
        raise ValueError(
            f"{dataset.name} has no class labels, so it cannot be conditioned on {name_or_index!r}"
        )
    if isinstance(name_or_index, str):
        wanted = name_or_index.strip().casefold()
        for i, name in enumerate(names):
            if name.casefold() == wanted:
                return i
        if not wanted.lstrip("-").isdigit():
            raise ValueError(
                f"{dataset.name} has no class {name_or_index!r}. {_describe_names(names, wanted)}"
            )
        name_or_index = int(wanted)
    if isinstance(name_or_index, bool) or not isinstance(name_or_index, int | np.integer):
        raise TypeError(f"class must be a name or an index, got {name_or_index!r}")
    if not 0 <= name_or_index < len(names):
        raise ValueError(
            f"{dataset.name}: class index {name_or_index} out of range 0..{len(names) - 1}. "
            f"{_describe_names(names, '')}"
        )
    return int(name_or_index)


def _describe_names(names: Sequence[str], wanted: str, shown: int = 40) -> str:
    if len(names) <= shown:
        return "Valid classes: " + ", ".join(repr(n) for n in names)
    folded = {n.casefold(): n for n in names}
    close = difflib.get_close_matches(wanted, list(folded), n=5, cutoff=0.5)
    hint = f"Closest: {', '.join(repr(folded[c]) for c in close)}. " if close else ""
    return f"{hint}{len(names)} classes, e.g. " + ", ".join(repr(n) for n in names[:shown]) + ", ..."
