"""Fashion-MNIST: our IDX parser, its errors, and the installed files' known properties."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from latentdiff.data.fashion_mnist import CLASS_NAMES, read_idx


def _idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_idx_round_trip_plain_and_gzip(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "x-idx3-ubyte").write_bytes(_idx_bytes(images))
    (tmp_path / "x-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(images)))
    assert np.array_equal(read_idx(tmp_path / "x-idx3-ubyte"), images)
    assert np.array_equal(read_idx(tmp_path / "x-idx3-ubyte.gz"), images)
    wide = np.array([1, -2, 300], dtype=">i4")
    header = struct.pack(">BBBBI", 0, 0, 0x0C, 1, 3)
    (tmp_path / "w").write_bytes(header + wide.tobytes())
    assert read_idx(tmp_path / "w").tolist() == [1, -2, 300]


def test_bad_idx_files_name_the_file(tmp_path):
    bad_magic = tmp_path / "bad-magic.gz"
    bad_magic.write_bytes(gzip.compress(b"\x12\x34\x08\x01" + b"\x00" * 8))
    with pytest.raises(ValueError, match="bad-magic.gz.*magic number 12340801"):
        read_idx(bad_magic)
    short = tmp_path / "short"
    short.write_bytes(_idx_bytes(np.zeros((4, 2, 2), dtype=np.uint8))[:-3])
    with pytest.raises(ValueError, match="short.*bytes"):
        read_idx(short)
    not_gzip = tmp_path / "fake.gz"
    not_gzip.write_bytes(b"plain text")
    with pytest.raises(ValueError, match="fake.gz"):
        read_idx(not_gzip)


def test_installed_files_are_the_balanced_official_split(use_builtin):
    folder = use_builtin("fashion-mnist")
    for split, stem, per_class in (("train", "train", 6000), ("test", "t10k", 1000)):
        labels = read_idx(next(folder.glob(f"{stem}-labels-idx1-ubyte*")))
        images = read_idx(next(folder.glob(f"{stem}-images-idx3-ubyte*")))
        assert images.shape == (len(labels), 28, 28) and images.dtype == np.uint8, split
        assert np.bincount(labels).tolist() == [per_class] * 10, split
    assert CLASS_NAMES[0] == "T-shirt/top" and CLASS_NAMES[7] == "Sneaker" and CLASS_NAMES[9] == "Ankle boot"
