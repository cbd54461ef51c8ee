"""scikit-learn's `load_digits` (UCI optical digits): 1,797 8×8 greyscale digits, values 0–16.

Read from the table that ships inside scikit-learn (`sklearn/datasets/data/digits.csv.gz`), the same
file `load_digits` parses.

Pixels are scaled to bytes by round(v·255/16). Fixed split: every tenth image (index % 10 == 9) is `test`
(179 images), the rest `train` (1,618); the set cycles through the digits, so both splits hold all ten.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from latentdiff.data.image_convert import fit_array
from latentdiff.data.source import BuiltinSource, DatasetNotInstalled, SourceSplit, source_fingerprint

NAME = "digits"
CLASS_NAMES = [str(d) for d in range(10)]
COUNTS = {"train": 1618, "test": 179}
TEST_EVERY = 10


def install_command() -> str:
    return "pip install scikit-learn"


def locate() -> Path:
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise DatasetNotInstalled(NAME, [Path("<python package sklearn>")], install_command())
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise DatasetNotInstalled(NAME, [path], install_command())
    return path


def fingerprint(path: Path) -> str:
    return source_fingerprint(NAME, files=[path])


def read_split(path: Path, split: str) -> SourceSplit:
    # the file `sklearn.datasets.load_digits` reads (64 pixel values then the digit, per row), parsed
    # directly: importing scikit-learn's dataset module takes seconds
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path}: cannot read the digits table ({e})") from e
    if table.ndim != 2 or table.shape[1] != 65 or table.min() < 0 or table[:, :64].max() > 16:
        raise ValueError(f"{path}: expected rows of 64 pixel values in 0..16 and a label, got {table.shape}")
    is_test = np.arange(len(table)) % TEST_EVERY == TEST_EVERY - 1
    keep = is_test if split == "test" else ~is_test
    pixels = np.rint(table[keep, :64] * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 1, 8, 8)
    labels = table[keep, 64].astype(np.int64)

    def decode(indices: np.ndarray, resolution: int, channels: int) -> np.ndarray:
        return fit_array(pixels[indices], resolution, channels)

    return SourceSplit(labels=labels, decode=decode, cheap_native=True)


SOURCE = BuiltinSource(
    name=NAME,
    description="scikit-learn digits: 1,797 8x8 greyscale handwritten digits (tiny runs and tests)",
    counts=COUNTS,
    shape=(1, 8, 8),
    install_command=install_command,
    locate=locate,
    fingerprint=fingerprint,
    class_names=lambda path: list(CLASS_NAMES),
    read_split=read_split,
)
