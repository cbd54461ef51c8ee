"""Cache of the real-image side of FID/KID: computed once per dataset, size and feature protocol.

Files, under `<cache>/fid_stats/` (cache: argument, else `$LATENTDIFF_DATA`, else `~/.cache/latentdiff`):

    <dataset>-<split>-<resolution>-<n>-<protocolhash>.npz           FeatureStats (μ, Σ float64, n, protocol)
    <dataset>-<split>-<resolution>-<n>-<protocolhash>.features.npy  the n features, float32

KID needs the features themselves, not only (μ, Σ), so they are kept too, in float32 (2048 × 4 bytes
per image): KID moves by ~1e-7 relative from that rounding, while μ and Σ are computed from the float64
features before it. The protocol hash covers everything that changes the features (network weights,
quantisation, resize, range, precision), so a change of preprocessing names another file and the
statistics are recomputed instead of silently reused. Both files are written atomically (temporary file
+ rename), features first, so a present .npz means a complete entry.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from hashlib import sha256
from pathlib import Path
from typing import Protocol

import numpy as np
from torch import Tensor

from latentdiff.io.paths import data_root
from latentdiff.metrics.fid import FeatureStats

log = logging.getLogger(__name__)

_KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class FeatureExtractor(Protocol):
    """What the cache needs from a feature extractor (InceptionFeatures is one)."""

    protocol: str
    protocol_hash: str

    def extract(self, batches: Iterable, progress: bool = True, total: int | None = None) -> np.ndarray: ...


def reference_key(dataset: str, split: str, resolution: int) -> str:
    """`<dataset>-<split>-<resolution>`; a folder path becomes its name plus a hash of its absolute path,
    so that two folders with one name never share statistics."""
    name = dataset
    if os.sep in dataset or Path(dataset).exists():
        path = Path(dataset).expanduser().resolve()
        name = f"{path.name}.{sha256(str(path).encode()).hexdigest()[:8]}"
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip("._-") or "dataset"
    return f"{name}-{split}-{int(resolution)}"


def reference_paths(
    dataset_key: str, num_images: int, protocol_hash: str, cache_dir: str | Path | None = None
) -> tuple[Path, Path]:
    """(stats .npz, features .npy) paths of one cache entry."""
    if not _KEY_PATTERN.fullmatch(dataset_key):
        raise ValueError(
            f"dataset_key {dataset_key!r} must be letters, digits, '.', '_' or '-' "
            "(build it with reference_key(dataset, split, resolution))"
        )
    if not _KEY_PATTERN.fullmatch(protocol_hash):
        raise ValueError(f"protocol_hash {protocol_hash!r} is not a plain token")
    folder = Path(cache_dir) if cache_dir is not None else data_root()
    stem = f"{dataset_key}-{int(num_images)}-{protocol_hash}"
    return folder / "fid_stats" / f"{stem}.npz", folder / "fid_stats" / f"{stem}.features.npy"


def _first_images(batches: Iterable, num_images: int, dataset_key: str) -> Iterator[Tensor]:
    seen = 0
    for batch in batches:
        images = batch[0] if isinstance(batch, tuple | list) else batch
        images = images[: num_images - seen]
        seen += len(images)
        yield images
        if seen >= num_images:
            return
    raise ValueError(f"{dataset_key}: asked for {num_images} reference images, the data gave only {seen}")


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _save_npy(array: np.ndarray) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)

    return write


def _compute(
    dataset_key: str,
    images_fn: Callable[[], Iterable],
    num_images: int,
    extractor: FeatureExtractor,
    paths: tuple[Path, Path],
    progress: bool,
) -> tuple[FeatureStats, np.ndarray]:
    stats_path, features_path = paths
    log.info("computing reference features for %s (%d images) -> %s", dataset_key, num_images, stats_path)
    batches = _first_images(images_fn(), num_images, dataset_key)
    features = extractor.extract(batches, progress=progress, total=num_images)
    protocol = f"{extractor.protocol}/{extractor.protocol_hash}"
    stats = FeatureStats.from_features(features, protocol=protocol)
    features32 = features.astype(np.float32)
    _write_atomic(features_path, _save_npy(features32))
    _write_atomic(stats_path, stats.save)
    return stats, features32


def reference_stats(
    dataset_key: str,
    images_fn: Callable[[], Iterable],
    num_images: int,
    extractor: FeatureExtractor,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> FeatureStats:
    """FeatureStats of the first `num_images` images of `images_fn()` (an iterable of image batches, or of
    (images, labels) pairs), from the cache when present; `images_fn` is only called on a miss."""
    paths = reference_paths(dataset_key, num_images, extractor.protocol_hash, cache_dir)
    if paths[0].is_file():
        log.info("reusing reference statistics %s", paths[0])
        return FeatureStats.load(paths[0])
    return _compute(dataset_key, images_fn, num_images, extractor, paths, progress)[0]


def reference_features(
    dataset_key: str,
    images_fn: Callable[[], Iterable],
    num_images: int,
    extractor: FeatureExtractor,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> np.ndarray:
    """The cached (num_images, d) float32 features (for KID), computed like `reference_stats` on a miss."""
    paths = reference_paths(dataset_key, num_images, extractor.protocol_hash, cache_dir)
    if paths[0].is_file() and paths[1].is_file():
        log.info("reusing reference features %s", paths[1])
        features = np.load(paths[1], allow_pickle=False)
        if features.shape[0] != num_images:
            raise ValueError(f"{paths[1]}: holds {features.shape[0]} features, its name says {num_images}")
        return features
    return _compute(dataset_key, images_fn, num_images, extractor, paths, progress)[1]
