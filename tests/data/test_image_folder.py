"""ImageFolder on a folder of awkward files: channel conversions, broken files, labels, formats, flips."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from latentdiff.data.image_folder import ImageFolder, read_image

LOGGER = "latentdiff.data.image_folder"
GOOD = {"cmyk.jpg", "grey.png", "grey16.png", "palette.png", "rgba.png"}
BROKEN = {"empty.png", "truncated.png"}


def _write_fixture(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    Image.new("CMYK", (8, 8), (255, 0, 0, 0)).save(root / "cmyk.jpg", quality=100)  # pure cyan
    wide = np.full((8, 8), 32768, dtype=np.uint16)
    wide[:, :4] = 65535
    Image.fromarray(wide).save(root / "grey16.png")
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[4:] = (255, 0, 0, 255)  # top half transparent black, bottom half opaque red
    Image.fromarray(rgba, "RGBA").save(root / "rgba.png")
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette.paste(1, (0, 0, 8, 4))
    palette.save(root / "palette.png", transparency=1)  # top half: transparent palette entry
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4, "L").save(root / "grey.png")
    noise = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "PNG")
    (root / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("not an image, not a skipped image either")
    Image.new("RGB", (8, 8)).save(root / ".hidden.png")
    return root


@pytest.fixture
def awkward(tmp_path) -> Path:
    return _write_fixture(tmp_path / "awkward")


def _item(ds: ImageFolder, name: str) -> torch.Tensor:
    index = [p.name for p in ds.files].index(name)
    return ds[index][0]


def test_good_files_load_with_the_right_conversion(awkward, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        ds = ImageFolder(awkward, resolution=8, channels=3)
    assert {p.name for p in ds.files} == GOOD
    assert {p.name for p in ds.skipped} == BROKEN
    assert len(ds) == 5 and ds.num_classes == 0 and ds.class_names == []

    grey16 = _item(ds, "grey16.png")
    assert torch.all(grey16[:, :, :4] == 1.0)
    assert torch.allclose(grey16[:, :, 4:], torch.tensor(0.0), atol=0.01)  # 32768 → 128 → +0.004
    cyan = _item(ds, "cmyk.jpg")
    assert torch.allclose(cyan.mean(dim=(1, 2)), torch.tensor([-1.0, 1.0, 1.0]), atol=4 / 127.5)
    rgba = _item(ds, "rgba.png")
    assert torch.all(rgba[:, :4] == 1.0), "transparent pixels must come out white"
    assert torch.all(rgba[:, 4:] == torch.tensor([1.0, -1.0, -1.0])[:, None, None])
    palette = _item(ds, "palette.png")
    assert torch.all(palette[:, :4] == 1.0)
    expected = torch.tensor([10, 20, 30]) / 127.5 - 1
    assert torch.allclose(palette[:, 4:], expected[:, None, None].expand(3, 4, 8))
    grey = _item(ds, "grey.png")
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    assert torch.allclose(grey[0], torch.arange(64.0).reshape(8, 8) * 4 / 127.5 - 1)


def test_broken_files_are_reported_once(awkward, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        ds = ImageFolder(awkward, resolution=8, channels=1)
        ds.get_batch(range(len(ds)))
    records = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(records) == 1
    message = records[0].getMessage()
    assert "skipped 2 unreadable" in message
    assert str(awkward / "empty.png") in message and str(awkward / "truncated.png") in message


def test_greyscale_output(awkward):
    ds = ImageFolder(awkward, resolution=8, channels=1)
    assert ds.channels == 1
    assert torch.allclose(_item(ds, "rgba.png")[0, 4:], torch.tensor(76 / 127.5 - 1))  # red → luma 76
    assert torch.all(_item(ds, "grey16.png")[0, :, :4] == 1.0)


def test_uncached_reads_equal_cached_reads(awkward):
    cached = ImageFolder(awkward, resolution=4, channels=3)
    lazy = ImageFolder(awkward, resolution=4, channels=3, cache=False)
    assert lazy.images is None and cached.images is not None
    assert torch.equal(cached.get_batch(range(5))[0], lazy.get_batch(range(5))[0])


def test_empty_folder_names_folder_and_extensions(tmp_path):
    empty = tmp_path / "nothing here"
    empty.mkdir()
    (empty / "readme.txt").write_text("hi")
    with pytest.raises(ValueError) as err:
        ImageFolder(empty, resolution=8)
    assert str(empty) in str(err.value)
    for ext in (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tiff"):
        assert ext in str(err.value)
    broken_only = tmp_path / "broken"
    broken_only.mkdir()
    (broken_only / "a.png").write_bytes(b"")
    with pytest.raises(ValueError, match="1 unreadable"):
        ImageFolder(broken_only, resolution=8)
    with pytest.raises(FileNotFoundError, match="missing"):
        ImageFolder(tmp_path / "missing", resolution=8)


def test_labels_from_first_level_folders(tmp_path):
    root = tmp_path / "classes"
    for cls, value in (("dog", 200), ("cat", 100), ("cat/kittens", 50)):
        (root / cls).mkdir(parents=True)
        Image.new("L", (4, 4), value).save(root / cls / "x.png")
    (root / "zebra").mkdir()  # a class without images in this split keeps its number
    ds = ImageFolder(root, resolution=4, channels=1)
    assert ds.class_names == ["cat", "dog", "zebra"]
    by_value = {int(round((float(ds[i][0][0, 0, 0]) + 1) * 127.5)): ds[i][1] for i in range(len(ds))}
    assert by_value == {50: 0, 100: 0, 200: 1}
    Image.new("L", (4, 4), 0).save(root / "loose.png")
    auto = ImageFolder(root, resolution=4, channels=1)
    assert auto.num_classes == 0 and set(auto.labels.tolist()) == {0}
    with pytest.raises(ValueError, match="loose.png"):
        ImageFolder(root, resolution=4, labels=True)
    assert ImageFolder(root, resolution=4, labels=False).num_classes == 0


def test_all_formats_decode_to_the_same_pixels(tmp_path):
    rgb = np.zeros((6, 6, 3), dtype=np.uint8)
    rgb[:3] = (255, 0, 0)
    rgb[3:, :3] = (0, 128, 255)
    img = Image.fromarray(rgb)
    root = tmp_path / "formats"
    root.mkdir()
    img.save(root / "a.png")
    img.save(root / "b.BMP")
    img.save(root / "c.tiff")
    img.save(root / "d.webp", lossless=True)
    first, second = img.quantize(4), Image.new("RGB", (6, 6), (0, 255, 0)).quantize(4)
    first.save(root / "e.gif", save_all=True, append_images=[second])
    ds = ImageFolder(root, resolution=6, channels=3)
    assert [p.name for p in ds.files] == ["a.png", "b.BMP", "c.tiff", "d.webp", "e.gif"]
    images = ds.get_batch(range(5))[0]
    for i in range(1, 5):
        assert torch.equal(images[i], images[0]), ds.files[i].name


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (8, 4), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    img.save(tmp_path / "photo.jpg", exif=exif)
    assert read_image(tmp_path / "photo.jpg").size == (4, 8)


def test_limit_spreads_over_the_files(awkward):
    ds = ImageFolder(awkward, resolution=4, limit=3)
    # the 7 candidate files in sorted order are cmyk, empty, grey, grey16, palette, rgba, truncated;
    # indices 0, 2, 4 are kept
    assert [p.name for p in ds.files] == ["cmyk.jpg", "grey.png", "palette.png"]


def test_flips_follow_torch_global_rng(awkward):
    ds = ImageFolder(awkward, resolution=8, channels=3, flip=True)
    plain, _ = ds.get_batch(range(5), flip=False)
    torch.manual_seed(1)
    first, _ = ds.get_batch(range(5))
    torch.manual_seed(1)
    again, _ = ds.get_batch(range(5))
    assert torch.equal(first, again)
    torch.manual_seed(1)
    flipped = torch.rand(5) < 0.5
    assert flipped.any() and not flipped.all()
    assert torch.equal(first[flipped], plain[flipped].flip(-1))
    assert torch.equal(first[~flipped], plain[~flipped])
    mask = torch.tensor([True, False, False, False, True])
    chosen, _ = ds.get_batch(range(5), flip=mask)
    assert torch.equal(chosen[mask], plain[mask].flip(-1)) and torch.equal(chosen[~mask], plain[~mask])
