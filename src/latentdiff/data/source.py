"""What a built-in dataset is: where its files live, how to install it, and how to read one split.

Data location: `$LATENTDIFF_DATA` when set, else `~/.cache/latentdiff`. Each built-in set looks there first
(`<root>/<name>/...`) and then at its system location (e.g. the Debian package's folder); preprocessed
arrays are cached under `<root>/preprocessed/`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latentdiff.io.paths import DATA_ENV, data_root  # noqa: F401  (re-exported: data.data_root)


class DatasetNotInstalled(FileNotFoundError):
    """A built-in dataset's files are missing; the message says which command installs them."""

    def __init__(self, name: str, looked_in: Sequence[Path], install_command: str) -> None:
        self.name = name
        self.install_command = install_command
        places = ", ".join(str(p) for p in looked_in)
        super().__init__(
            f"dataset '{name}' is not installed (looked in: {places}). Install it with:\n"
            f"  {install_command}\n"
            f"or run `bash scripts/install_data.sh`; set {DATA_ENV} to use another data folder."
        )


def first_existing(name: str, candidates: Sequence[Path], install_command: str) -> Path:
    """The first of `candidates` that exists, else `DatasetNotInstalled`."""
    for path in candidates:
        if path.exists():
            return path
    raise DatasetNotInstalled(name, candidates, install_command)


def source_fingerprint(*parts: object, files: Sequence[Path] = ()) -> str:
    """A short key that changes when any source file (path, size, mtime) or any of `parts` changes."""
    stats = []
    for f in files:
        st = f.stat()
        stats.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
    blob = json.dumps([[str(p) for p in parts], stats])
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class SourceSplit:
    """One split read from its source: labels now, pixels on demand.

    `decode(indices, resolution, channels)` returns uint8 (len(indices), channels, resolution, resolution).
    `cheap_native`: the source already holds decoded uint8 pixels, so caching them at the native size and
    channel count would not make a second load faster.
    """

    labels: np.ndarray
    decode: Callable[[np.ndarray, int, int], np.ndarray]
    cheap_native: bool


@dataclass(frozen=True)
class BuiltinSource:
    """A built-in dataset. `counts` are documented constants (checked against the data by the tests) so
    that listing datasets never reads them. `captions(location, split)`, when set, gives each image of a
    split its captions (a list per image, in the split's order; text-to-image)."""

    name: str
    description: str
    counts: dict[str, int]
    shape: tuple[int, int, int]
    install_command: Callable[[], str]
    locate: Callable[[], Path]
    fingerprint: Callable[[Path], str]
    class_names: Callable[[Path], list[str]]
    read_split: Callable[[Path, str], SourceSplit]
    captions: Callable[[Path, str], list[list[str]]] | None = None

    def is_installed(self) -> bool:
        try:
            self.locate()
        except DatasetNotInstalled:
            return False
        return True

    def check_split(self, split: str) -> None:
        if split not in self.counts:
            raise ValueError(f"dataset '{self.name}' has splits {list(self.counts)}, not {split!r}")
