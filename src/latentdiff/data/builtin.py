"""The built-in datasets by name, decoded once and cached as uint8 `.npy` arrays.

A split at a given resolution and channel count is decoded from its source once and saved under
`<data root>/preprocessed/<name>/<split>-<res>px-<C>ch-<key>.{images,labels}.npy`, where the key changes
with the source files, this cache's format and the Pillow version (whose bicubic filter makes the pixels).
A later load reads the arrays back (memory-mapped when only `limit` images are wanted). A load with
`limit` and no cache decodes just those images and writes nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import PIL

from latentdiff.data import digits, emoji, fashion_mnist, mnist, shapes
from latentdiff.data.dataset import ArrayImageDataset, check_fits_in_memory, check_resolution, spread_indices
from latentdiff.data.source import BuiltinSource, data_root

log = logging.getLogger(__name__)

BUILTIN: dict[str, BuiltinSource] = {
    s.name: s for s in (fashion_mnist.SOURCE, emoji.SOURCE, mnist.SOURCE, digits.SOURCE, shapes.SOURCE)
}
CACHE_VERSION = 1


def builtin_names() -> list[str]:
    return list(BUILTIN)


def get_source(name: str) -> BuiltinSource:
    try:
        return BUILTIN[name.lower()]
    except KeyError:
        raise ValueError(
            f"no built-in dataset {name!r}; the built-in datasets are {builtin_names()}"
        ) from None


def list_datasets() -> list[dict[str, Any]]:
    """Name, description, splits, image count per split, native shape (C, H, W), whether it is installed
    and the command that installs it, for every built-in dataset (reads no image)."""
    return [
        {
            "name": s.name,
            "description": s.description,
            "splits": list(s.counts),
            "counts": dict(s.counts),
            "shape": s.shape,
            "installed": s.is_installed(),
            "install_command": s.install_command(),
        }
        for s in BUILTIN.values()
    ]


def _cache_stem(source: BuiltinSource, split: str, resolution: int, channels: int, fingerprint: str) -> Path:
    key = hashlib.sha256(f"{fingerprint}|{CACHE_VERSION}|{PIL.__version__}".encode()).hexdigest()[:12]
    return data_root() / "preprocessed" / source.name / f"{split}-{resolution}px-{channels}ch-{key}"


def _cache_files(stem: Path) -> tuple[Path, Path]:
    return stem.with_name(stem.name + ".images.npy"), stem.with_name(stem.name + ".labels.npy")


def _read_cache(stem: Path) -> tuple[np.ndarray, np.ndarray] | None:
    images_path, labels_path = _cache_files(stem)
    if not images_path.is_file():
        return None
    try:
        images = np.load(images_path, mmap_mode="r", allow_pickle=False)
        labels = np.load(labels_path, allow_pickle=False)
    except (OSError, ValueError) as e:
        log.warning("ignoring unreadable dataset cache %s (%s); decoding again", images_path, e)
        return None
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(labels):
        log.warning(
            "ignoring dataset cache %s of unexpected shape %s; decoding again", images_path, images.shape
        )
        return None
    return images, labels


def _save_npy(array: np.ndarray, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_cache(stem: Path, images: np.ndarray, labels: np.ndarray) -> None:
    images_path, labels_path = _cache_files(stem)
    try:
        stem.parent.mkdir(parents=True, exist_ok=True)
        prefix = stem.name.rsplit("-", 1)[0] + "-"
        for old in stem.parent.glob(prefix + "*.npy"):  # caches of an older source or Pillow
            if not old.name.startswith(stem.name + "."):
                old.unlink(missing_ok=True)
        _save_npy(labels, labels_path)  # labels first: the images file marks a complete cache
        _save_npy(images, images_path)
    except OSError as e:
        log.warning("could not cache %s (%s); it will be decoded again next time", images_path, e)


def load_builtin(
    name: str,
    split: str = "train",
    resolution: int | None = None,
    channels: int | None = None,
    flip: bool = False,
    limit: int | None = None,
) -> ArrayImageDataset:
    """A built-in dataset at `resolution` (default: native) with `channels` (default: native)."""
    source = get_source(name)
    source.check_split(split)
    native_channels, native_resolution, _ = source.shape
    resolution = resolution or native_resolution
    channels = channels or native_channels
    if channels not in (1, 3):
        raise ValueError(f"{name}: need channels 1 or 3, got {channels}")
    check_resolution(resolution, f"{name}: resolution")
    location = source.locate()
    stem = _cache_stem(source, split, resolution, channels, source.fingerprint(location))
    class_names = source.class_names(location)

    cached = _read_cache(stem)
    if cached is not None:
        images, labels = cached
        keep = spread_indices(len(labels), limit)
        check_fits_in_memory(f"{source.name} {split}", len(keep), channels, resolution)
        images, labels = np.ascontiguousarray(images[keep]), labels[keep]
    else:
        raw = source.read_split(location, split)
        keep = spread_indices(len(raw.labels), limit)
        check_fits_in_memory(f"{source.name} {split}", len(keep), channels, resolution)
        log.info(
            "decoding %s %s: %d images, %d px, %d channels",
            source.name,
            split,
            len(keep),
            resolution,
            channels,
        )
        images, labels = raw.decode(keep, resolution, channels), raw.labels[keep]
        is_native = (resolution, channels) == (native_resolution, native_channels)
        if len(keep) == len(raw.labels) and not (raw.cheap_native and is_native):
            _write_cache(stem, images, labels)
    dataset = ArrayImageDataset(
        images, labels, name=source.name, split=split, class_names=class_names, flip=flip
    )
    if source.captions is not None:
        every = source.captions(location, split)
        dataset.captions = [list(every[i]) for i in spread_indices(len(every), limit)]
    return dataset
