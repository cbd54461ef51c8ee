"""Pixel conversion rules shared by image folders and built-in sets."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from latentdiff.data.image_convert import fit_array, image_to_array, resize_center_crop, to_channels


def _pixels(img: Image.Image, channels: int) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8 after the mode conversion alone."""
    return np.asarray(to_channels(img, channels))


def test_sixteen_bit_grey_is_scaled_not_clipped():
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    assert _pixels(img, 1).tolist() == [[0, 1, 128, 255]]
    assert _pixels(img, 3)[0, 2].tolist() == [128, 128, 128]
    as_int32 = Image.fromarray(values.astype(np.int32))  # Pillow's mode "I"
    assert as_int32.mode == "I"
    assert _pixels(as_int32, 1).tolist() == [[0, 1, 128, 255]]


def test_alpha_is_composited_on_white():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (0, 0, 0, 0)  # fully transparent black → white
    rgba[0, 1] = (255, 0, 0, 255)  # opaque red
    rgba[1, 0] = (0, 0, 255, 128)  # half blue over white
    rgba[1, 1] = (10, 20, 30, 255)
    out = _pixels(Image.fromarray(rgba, "RGBA"), 3)
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [255, 0, 0]
    assert out[1, 0].tolist() == [127, 127, 255]
    assert out[1, 1].tolist() == [10, 20, 30]
    la = Image.fromarray(np.array([[[0, 0], [50, 255]]], dtype=np.uint8), "LA")
    assert _pixels(la, 1).tolist() == [[255, 50]]


def test_palette_with_transparency_index():
    img = Image.new("P", (2, 1))
    img.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    img.info["transparency"] = 1
    assert _pixels(img, 3).tolist() == [[[10, 20, 30], [255, 255, 255]]]
    del img.info["transparency"]
    assert _pixels(img, 3).tolist() == [[[10, 20, 30], [200, 100, 50]]]


def test_cmyk_and_channel_changes():
    cyan = Image.new("CMYK", (1, 1), (255, 0, 0, 0))
    assert _pixels(cyan, 3).tolist() == [[[0, 255, 255]]]
    grey = Image.new("L", (1, 1), 77)
    assert _pixels(grey, 3).tolist() == [[[77, 77, 77]]]
    red = Image.new("RGB", (1, 1), (255, 0, 0))
    assert _pixels(red, 1).tolist() == [[76]]  # ITU-R 601-2 luma: 0.299 · 255
    with pytest.raises(ValueError, match="channels"):
        to_channels(grey, 2)


def test_resize_then_center_crop_keeps_the_middle():
    # 12×4 image: a 4-px black square in the middle of white; resolution 2 → 6×2, centre 2×2 is the square
    img = Image.new("L", (12, 4), 255)
    img.paste(0, (4, 0, 8, 4))
    out = resize_center_crop(img, 2)
    assert out.size == (2, 2)
    assert np.asarray(out).max() < 40
    tall = resize_center_crop(Image.new("L", (3, 9), 0), 3)
    assert tall.size == (3, 3)


def test_downscaling_is_antialiased():
    checker = (np.indices((32, 32)).sum(0) % 2 * 255).astype(np.uint8)
    out = image_to_array(Image.fromarray(checker), 8, 1)
    assert np.abs(out.astype(int) - 127).max() <= 4, "a 1-px checkerboard shrunk 4x must average to grey"


def test_fit_array_matches_the_file_path():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 1, 28, 28), dtype=np.uint8)
    fitted = fit_array(images, 32, 3)
    for i in range(3):
        assert np.array_equal(fitted[i], image_to_array(Image.fromarray(images[i, 0]), 32, 3))
    assert np.array_equal(fit_array(images, 28, 1), images)
    assert np.array_equal(fit_array(images, 28, 3), np.repeat(images, 3, axis=1))
