"""Export a dataset to PNG class folders; ImageFolder reads back the same pixels and labels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from latentdiff.data import ImageFolder, export_dataset, load_dataset
from latentdiff.data.png_export import class_folder_names


def _index_of(path) -> int:
    return int(path.stem)


def _assert_round_trip(original, folder) -> None:
    back = ImageFolder(folder, resolution=original.resolution, channels=original.channels)
    assert back.class_names and len(back) == len(original)
    assert back.num_classes == original.num_classes
    order = [_index_of(p) for p in back.files]
    assert np.array_equal(back.images, original.images[order])
    assert np.array_equal(back.labels, original.labels[order])


def test_digits_round_trip(use_builtin, tmp_path):
    use_builtin("digits")
    n = export_dataset("digits", tmp_path / "out", split="test")
    original = load_dataset("digits", "test")
    assert n == len(original) == 179
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [str(d) for d in range(10)]
    _assert_round_trip(original, tmp_path / "out")


def test_fashion_mnist_round_trip_keeps_class_order(use_builtin, tmp_path):
    use_builtin("fashion-mnist")
    export_dataset("fashion-mnist", tmp_path / "out", split="test", limit=40)
    folders = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert folders[0] == "0_T-shirt_top" and folders[9] == "9_Ankle boot"
    _assert_round_trip(load_dataset("fashion-mnist", "test", limit=40), tmp_path / "out")


def test_rgb_folder_round_trip_and_unlabelled_export(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, size=(5, 5, 3), dtype=np.uint8)).save(src / f"{i}.png")
    assert export_dataset(src, tmp_path / "out", resolution=5) == 3
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    original = load_dataset(src, resolution=5)
    back = ImageFolder(tmp_path / "out", resolution=5)
    assert back.num_classes == 0 and np.array_equal(back.images, original.images)
    with pytest.raises(FileExistsError, match="not empty"):
        export_dataset(src, tmp_path / "out", resolution=5)


def test_class_folder_names():
    assert class_folder_names(["cat", "dog"]) == ["cat", "dog"]
    assert class_folder_names(["dog", "cat"]) == ["0_dog", "1_cat"]
    assert class_folder_names(["a/b", "a:b"]) == ["0_a_b", "1_a_b"]  # collide once cleaned
    assert class_folder_names(["WOMAN'S HAT", "ZEBRA"]) == ["WOMAN_S HAT", "ZEBRA"]
    names = class_folder_names([str(i) for i in range(12)])
    assert names[0] == "00_0" and names[11] == "11_11"


def test_emoji_round_trip_keeps_classes_without_images(use_builtin, tmp_path):
    use_builtin("emoji")
    export_dataset("emoji", tmp_path / "out", split="test", limit=12)
    assert sum(1 for _ in (tmp_path / "out").iterdir()) == 1425  # empty class folders keep the numbering
    _assert_round_trip(load_dataset("emoji", "test", limit=12), tmp_path / "out")
