"""ImageFolder on a folder of awkward files: channel conversions, broken files, labels, formats, flips."""

from __future__ import annotations

import io
import logging
import warnings
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


def test_symlinked_class_folders_are_followed_like_real_ones(tmp_path):
    """A class folder that is a symlink (and a symlinked folder deeper down) contributes its images."""
    outside = tmp_path / "elsewhere"
    (outside / "dogs").mkdir(parents=True)
    (outside / "more").mkdir()
    Image.new("L", (4, 4), 200).save(outside / "dogs" / "d.png")
    Image.new("L", (4, 4), 150).save(outside / "more" / "m.png")
    root = tmp_path / "classes"
    (root / "cat").mkdir(parents=True)
    Image.new("L", (4, 4), 100).save(root / "cat" / "c.png")
    (root / "dog").symlink_to(outside / "dogs", target_is_directory=True)
    (root / "cat" / "extra").symlink_to(outside / "more", target_is_directory=True)
    ds = ImageFolder(root, resolution=4, channels=1)
    assert ds.class_names == ["cat", "dog"]
    rel = [p.relative_to(root).as_posix() for p in ds.files]
    assert rel == ["cat/c.png", "cat/extra/m.png", "dog/d.png"]
    values = [int(round((float(ds[i][0][0, 0, 0]) + 1) * 127.5)) for i in range(len(ds))]
    assert values == [100, 150, 200] and ds.labels.tolist() == [0, 0, 1]


def test_symlink_loops_are_reported_and_not_followed(tmp_path, caplog):
    root = tmp_path / "classes"
    (root / "cat").mkdir(parents=True)
    Image.new("L", (4, 4), 100).save(root / "cat" / "c.png")
    (root / "cat" / "back").symlink_to(root, target_is_directory=True)  # cat/back/cat/back/... forever
    (root / "up").symlink_to(tmp_path, target_is_directory=True)  # a first-level "class" holding root
    # a loop through two links that point at each other's folders
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "to_b").symlink_to(tmp_path / "b", target_is_directory=True)
    (tmp_path / "b" / "to_a").symlink_to(tmp_path / "a", target_is_directory=True)
    Image.new("L", (4, 4), 50).save(tmp_path / "a" / "a.png")
    (root / "ab").symlink_to(tmp_path / "a", target_is_directory=True)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        ds = ImageFolder(root, resolution=4, channels=1)
    assert [p.relative_to(root).as_posix() for p in ds.files] == ["ab/a.png", "cat/c.png"]
    assert ds.class_names == ["ab", "cat"]  # "up" leads back above the root: not a class
    reports = [r.getMessage() for r in caplog.records if "loop back" in r.getMessage()]
    assert len(reports) == 1, caplog.text
    for link in ("cat/back", "up", "ab/to_b/to_a"):
        assert str(root / link) in reports[0], link


def _blank_png(path: Path, width: int, height: int) -> None:
    """A valid greyscale PNG of width × height black pixels, written without holding it in memory."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte + pixels
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    signature = b"\x89PNG\r\n\x1a\n"
    path.write_bytes(signature + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(tmp_path, caplog, monkeypatch):
    """A 12,000² px image (144 MP, 1.4 GB decoded as RGB float) is skipped with its size and the limit
    named, and never decoded; the limit is configurable."""
    from latentdiff.data.image_folder import MAX_PIXELS_ENV, ImageTooLarge, load_image_file

    root = tmp_path / "photos"
    root.mkdir()
    _blank_png(root / "huge.png", 12_000, 12_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(root / "huge.png") as check:
            assert check.size == (12_000, 12_000)
    Image.new("L", (16, 16), 77).save(root / "small.png")
    decoded = []
    real_load = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self.size) or real_load(self))
    with caplog.at_level(logging.WARNING, logger=LOGGER), warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning from Pillow either
        ds = ImageFolder(root, resolution=8, channels=1)
    assert [p.name for p in ds.files] == ["small.png"] and [p.name for p in ds.too_large] == ["huge.png"]
    assert (12_000, 12_000) not in decoded
    message = caplog.text
    assert str(root / "huge.png") in message and "12000×12000 px" in message and "50 MP" in message
    assert MAX_PIXELS_ENV in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageTooLarge, match=r"huge\.png: 12000×12000 px \(144\.0 MP\) is over the limit"):
            load_image_file(root / "huge.png", 1, 8)
    # the limit is a setting: 100 px refuses the 16×16 image too, by parameter or environment
    with pytest.raises(ValueError, match=r"no readable image.*2 file\(s\) over the 0\.0001 MP limit"):
        ImageFolder(root, resolution=8, channels=1, max_pixels=100)
    monkeypatch.setenv(MAX_PIXELS_ENV, "256")
    assert [p.name for p in ImageFolder(root, resolution=8, channels=1).files] == ["small.png"]
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ValueError, match=f"{MAX_PIXELS_ENV}='lots' must be a positive whole number"):
        ImageFolder(root, resolution=8, channels=1)
