"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): 70,000 28×28 greyscale clothing images in 10 classes.

Read from the IDX files of the Debian package `dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist`)
or from `$LATENTDIFF_DATA/fashion-mnist`; gzip-compressed (`*.gz`) or plain. The official split is kept:
60,000 train / 10,000 test.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from latentdiff.data.image_convert import fit_array
from latentdiff.data.source import (
    BuiltinSource,
    DatasetNotInstalled,
    SourceSplit,
    data_root,
    source_fingerprint,
)

NAME = "fashion-mnist"
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
COUNTS = {"train": 60000, "test": 10000}

# IDX type codes (third byte of the magic number) → big-endian numpy dtypes
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (LeCun's MNIST format: magic 0x0000TTDD, DD big-endian uint32 sizes, data)."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: cannot read ({e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        magic = raw[:4].hex() or "empty file"
        raise ValueError(
            f"{path}: not an IDX file (magic number {magic}, expected 0000TTDD with type TT in 08..0e)"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(dims) != ndim or len(raw) != expected:
        raise ValueError(f"{path}: IDX file of shape {dims} should be {expected} bytes, found {len(raw)}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _candidates() -> list[Path]:
    return [data_root() / NAME, SYSTEM_DIR]


def install_command() -> str:
    return "sudo apt-get install dataset-fashion-mnist"


def _file(folder: Path, stem: str) -> Path:
    gz = folder / f"{stem}.gz"
    return gz if gz.exists() else folder / stem


def locate() -> Path:
    """The first folder holding the training images (compressed or not)."""
    for folder in _candidates():
        if _file(folder, FILES["train"][0]).exists():
            return folder
    raise DatasetNotInstalled(NAME, _candidates(), install_command())


def fingerprint(folder: Path) -> str:
    return source_fingerprint(NAME, files=[_file(folder, stem) for pair in FILES.values() for stem in pair])


def read_split(folder: Path, split: str) -> SourceSplit:
    images_path, labels_path = (_file(folder, stem) for stem in FILES[split])
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{images_path}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{labels_path}: expected {len(images)} labels, got shape {labels.shape}")
    if labels.max(initial=0) >= len(CLASS_NAMES):
        raise ValueError(f"{labels_path}: label {labels.max()} outside 0..{len(CLASS_NAMES) - 1}")
    pixels = images[:, None]

    def decode(indices: np.ndarray, resolution: int, channels: int) -> np.ndarray:
        return fit_array(pixels[indices], resolution, channels)

    return SourceSplit(labels=labels.astype(np.int64), decode=decode, cheap_native=True)


SOURCE = BuiltinSource(
    name=NAME,
    description="Fashion-MNIST: 28x28 greyscale clothing, 10 classes (Debian dataset-fashion-mnist)",
    counts=COUNTS,
    shape=(1, 28, 28),
    install_command=install_command,
    locate=locate,
    fingerprint=fingerprint,
    class_names=lambda folder: list(CLASS_NAMES),
    read_split=read_split,
)
