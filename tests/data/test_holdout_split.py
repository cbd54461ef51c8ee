"""The held-out split of an image folder without a `test/` sub-folder: a per-file rule on a hash of its
path (`is_held_out`), applied by `ImageFolder(holdout=...)` and by `load_dataset` for every command."""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path

import pytest
from PIL import Image

from latentdiff.data.image_folder import HOLDOUT_FRACTION, ImageFolder, is_held_out
from latentdiff.data.load import load_dataset


def _write(root: Path, names: list[str]) -> None:
    for i, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8), i % 256).save(path)


def _names(classes: dict[str, int], start: int = 0) -> list[str]:
    return [f"{cls}/{i:04d}.png" for cls, n in classes.items() for i in range(start, start + n)]


def _rel(ds: ImageFolder, root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in ds.files}


def _bounds(n: int, p: float = HOLDOUT_FRACTION, sd: float = 5.0) -> tuple[float, float]:
    """n·p ± 5 standard deviations of a binomial count: a fixed hash lies far inside."""
    spread = sd * math.sqrt(n * p * (1 - p))
    return n * p - spread, n * p + spread


def test_the_rule_is_the_documented_hash_of_the_path_alone():
    for path in ("a.png", "cats/001.png", "deep/er/ünïcode.jpg"):
        fraction = int.from_bytes(hashlib.sha1(path.encode()).digest()[:8], "big") / 2**64
        assert is_held_out(path) == (fraction < 0.1)
        assert is_held_out(path, fraction=1.0) and not is_held_out(path, fraction=0.0)
    assert HOLDOUT_FRACTION == 0.1
    held = sum(is_held_out(f"img/{i}.png") for i in range(20_000))
    low, high = _bounds(20_000)
    assert low < held < high


@pytest.fixture
def plain(tmp_path) -> Path:
    root = tmp_path / "plain"
    _write(root, _names({"a": 150, "b": 150}) + ["c/0001.png"])  # c/0001.png is not held out
    assert not is_held_out("c/0001.png")
    return root


def test_train_and_test_are_disjoint_cover_the_folder_and_share_classes(plain):
    everything = ImageFolder(plain, 8, 1)
    train = ImageFolder(plain, 8, 1, holdout="train")
    test = ImageFolder(plain, 8, 1, holdout="test", split="test")
    assert everything.holdout is None and train.holdout == "train" and test.holdout == "test"
    assert not _rel(train, plain) & _rel(test, plain)
    assert _rel(train, plain) | _rel(test, plain) == _rel(everything, plain)
    assert _rel(test, plain) == {name for name in _rel(everything, plain) if is_held_out(name)}
    low, high = _bounds(len(everything))
    assert low < len(test) < high and len(test) > 0
    # one class numbering, even for class c, which has no held-out image
    assert train.class_names == test.class_names == everything.class_names == ["a", "b", "c"]
    assert "c" not in {p.parent.name for p in test.files}
    label = {p: int(y) for p, y in zip(everything.files, everything.labels, strict=True)}
    for ds in (train, test):
        assert [int(y) for y in ds.labels] == [label[p] for p in ds.files]
    n = len(everything)
    assert test.split_rule == f"held out by path hash: 10 % of {plain} ({len(test)} of {n} images)"
    assert train.split_rule == f"{plain} minus the 10 % held out by path hash ({len(train)} of {n} images)"


def test_the_split_is_stable_across_loads_and_new_files(plain):
    first = _rel(load_dataset(plain, "test", 8), plain)
    assert _rel(load_dataset(plain, "test", 8), plain) == first
    train_before = _rel(load_dataset(plain, "train", 8), plain)
    _write(plain, _names({"a": 100, "d": 50}, start=500))
    test_after = _rel(load_dataset(plain, "test", 8), plain)
    train_after = _rel(load_dataset(plain, "train", 8), plain)
    assert first <= test_after and train_before <= train_after  # no old file changed sides
    assert len(test_after) > len(first)


def test_load_dataset_test_split_of_a_plain_folder(plain, caplog):
    with caplog.at_level(logging.INFO, logger="latentdiff.data"):
        test = load_dataset(plain, "test", 8)
    assert test.split == "test" and test.channels == 3 and test.class_names == ["a", "b", "c"]
    assert test.split_rule.startswith("held out by path hash: 10 % of")
    logged = [r.getMessage() for r in caplog.records if "held out by path hash" in r.getMessage()]
    assert logged == [f"test split: {test.split_rule}"]
    limited = load_dataset(plain, "test", 8, limit=3)
    assert len(limited) == 3 and set(limited.files) <= set(test.files)
    with pytest.raises(ValueError, match="no 'val' sub-folder"):
        load_dataset(plain, "val", 8)


def test_a_folder_with_no_held_out_image_has_no_test_split(tmp_path):
    root = tmp_path / "tiny"
    _write(root, ["a.png"])  # not held out
    assert len(load_dataset(root, "train", 8)) == 1
    with pytest.raises(ValueError) as err:
        load_dataset(root, "test", 8)
    message = str(err.value)
    assert str(root) in message and "1 image " in message and "10 %" in message
    assert "'test' sub-folder" in message
    held = tmp_path / "held"
    _write(held, ["000.png"])  # held out: nothing is left to train on
    assert is_held_out("000.png")
    assert len(load_dataset(held, "test", 8)) == 1
    with pytest.raises(ValueError, match="none to train on"):
        load_dataset(held, "train", 8)


def test_a_train_folder_without_test_is_split_by_paths_inside_it(tmp_path):
    _write(tmp_path / "train", _names({"a": 60, "b": 60}))
    train = load_dataset(tmp_path, "train", 8)
    test = load_dataset(tmp_path, "test", 8)
    inside = tmp_path / "train"
    assert train.class_names == test.class_names == ["a", "b"]
    assert _rel(test, inside) == {n for n in _names({"a": 60, "b": 60}) if is_held_out(n)} and len(test)
    assert not _rel(train, inside) & _rel(test, inside) and len(train) + len(test) == 120
    assert test.split_rule.startswith(f"held out by path hash: 10 % of {inside} ")


def test_train_and_test_subfolders_are_used_as_they_are(tmp_path):
    _write(tmp_path / "train", _names({"a": 30, "b": 30}))
    _write(tmp_path / "test", _names({"a": 5, "b": 5}))
    train, test = load_dataset(tmp_path, "train", 8), load_dataset(tmp_path, "test", 8)
    assert len(train) == 60 and len(test) == 10 and train.holdout is None and test.holdout is None
    assert train.class_names == test.class_names == ["a", "b"]
    assert train.split_rule == f"all 60 images of {tmp_path / 'train'}"


def test_a_test_subfolder_is_never_trained_on(tmp_path):
    _write(tmp_path, _names({"a": 20, "b": 20}))
    _write(tmp_path / "test", _names({"a": 4, "b": 4}))
    train, test = load_dataset(tmp_path, "train", 8), load_dataset(tmp_path, "test", 8)
    assert len(train) == 40 and len(test) == 8
    assert not any("test" in p.relative_to(tmp_path).parts for p in train.files)
    assert train.class_names == test.class_names == ["a", "b"]  # "test" is not a class
    assert train.split_rule == f"all 40 images of {tmp_path} except its test/ sub-folder"


def test_holdout_must_be_train_test_or_none(plain):
    with pytest.raises(ValueError, match="holdout"):
        ImageFolder(plain, 8, holdout="val")  # type: ignore[arg-type]
