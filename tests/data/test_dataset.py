"""The common ImageDataset interface: value range, indexing, limits and class lookup."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentdiff.data.dataset import ArrayImageDataset, class_index, spread_indices

FASHION = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def _dataset(class_names=FASHION) -> ArrayImageDataset:
    images = np.zeros((4, 3, 2, 2), dtype=np.uint8)
    images[1] = 255
    images[2, :, :, 0] = 255  # left column white, right column black
    images[3] = np.arange(12, dtype=np.uint8).reshape(3, 2, 2)
    return ArrayImageDataset(images, np.array([0, 7, 9, 2]), name="toy", class_names=class_names)


def test_get_batch_maps_bytes_to_minus_one_plus_one():
    ds = _dataset()
    images, labels = ds.get_batch(torch.tensor([0, 1, 3]))
    assert images.dtype == torch.float32 and images.shape == (3, 3, 2, 2)
    assert torch.all(images[0] == -1.0) and torch.all(images[1] == 1.0)
    assert torch.allclose(images[2], torch.arange(12.0).reshape(3, 2, 2) / 127.5 - 1)
    assert labels.dtype == torch.int64 and labels.tolist() == [0, 7, 2]
    image, label = ds[-1]
    assert torch.equal(image, images[2]) and label == 2 and isinstance(label, int)
    with pytest.raises(IndexError, match="toy"):
        ds[4]
    with pytest.raises(IndexError):
        ds.get_batch([0, -5])


def test_explicit_flip_mask_and_shape_check():
    ds = _dataset()
    image = ds.get_batch([2], flip=torch.tensor([True]))[0][0]
    assert torch.all(image[:, :, 0] == -1.0) and torch.all(image[:, :, 1] == 1.0)
    with pytest.raises(ValueError, match="flip mask"):
        ds.get_batch([1, 2], flip=torch.tensor([True]))


def test_class_index_by_name_or_number():
    ds = _dataset()
    assert class_index(ds, "sneaker") == 7
    assert class_index(ds, "  ANKLE BOOT ") == 9
    assert class_index(ds, "t-shirt/top") == 0
    assert class_index(ds, 3) == 3 and class_index(ds, "3") == 3
    with pytest.raises(ValueError) as err:
        class_index(ds, "sneakers!")
    for name in FASHION:
        assert repr(name) in str(err.value)
    with pytest.raises(ValueError, match="out of range"):
        class_index(ds, 10)
    with pytest.raises(ValueError, match="no class labels"):
        class_index(_dataset(class_names=[]), "cat")


def test_class_index_error_for_many_classes_suggests_close_names():
    names = [f"CLASS NUMBER {i:03d}" for i in range(100)] + ["GRINNING FACE"]
    with pytest.raises(ValueError) as err:
        class_index(_dataset(class_names=names), "grining face")
    assert "'GRINNING FACE'" in str(err.value) and "101 classes" in str(err.value)


def test_spread_indices_covers_sorted_classes():
    assert spread_indices(10, None).tolist() == list(range(10))
    assert spread_indices(10, 20).tolist() == list(range(10))
    assert spread_indices(10, 5).tolist() == [0, 2, 4, 6, 8]
    labels = np.repeat(np.arange(10), 100)  # a set stored sorted by class
    assert set(labels[spread_indices(len(labels), 10)]) == set(range(10))
    with pytest.raises(ValueError):
        spread_indices(10, 0)


@pytest.mark.parametrize("resolution", [0, -8, 100_000, 2.5, True])
def test_resolution_out_of_range_is_refused_naming_the_flag(tmp_path, data_home, resolution):
    """`--resolution 100000` used to fail with "Unable to allocate 447 GiB" from numpy."""
    from PIL import Image

    from latentdiff.data.load import load_dataset

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    message = rf"resolution={resolution!r}: the image side must be a whole number of pixels from 1 to 4096 "
    message += r"\(--resolution\)"
    for source in ("digits", str(tmp_path)):
        with pytest.raises(ValueError, match=message):
            load_dataset(source, resolution=resolution)


def test_data_that_would_not_fit_in_memory_is_refused_before_allocating(tmp_path, monkeypatch, data_home):
    from PIL import Image

    import latentdiff.data.dataset as dataset
    from latentdiff.data.load import load_dataset

    for i in range(3):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{i}.png")
    assert load_dataset(str(tmp_path), resolution=64).images.nbytes == 3 * 3 * 64 * 64
    memory = [3 * 3 * 64 * 64 - 1]  # one byte short
    monkeypatch.setattr(dataset, "physical_memory", lambda: memory[0])
    allocated = []
    real_empty = np.empty
    monkeypatch.setattr(
        np, "empty", lambda shape, *a, **k: allocated.append(shape) or real_empty(shape, *a, **k)
    )
    message = r"3 images of 3×64×64 px take 0\.0 GiB in memory, more than this machine's .*lower --resolution"
    with pytest.raises(ValueError, match=message + r" \(now 64\) or use fewer images \(--limit\)"):
        load_dataset(str(tmp_path), resolution=64)
    assert (3, 3, 64, 64) not in allocated
    assert len(load_dataset(str(tmp_path), resolution=64, limit=2)) == 2  # the way out that the message names
    for cached in (False, True):  # decoded now, or read back from the preprocessed cache (in data_home)
        if cached:
            memory[0] = 2**40
            load_dataset("digits", resolution=64)
            memory[0] = 1618 * 64 * 64 - 1
        with pytest.raises(ValueError, match=r"digits train: 1618 images of 1×64×64 px .* \(--limit\)"):
            load_dataset("digits", resolution=64)
