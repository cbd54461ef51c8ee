"""Any PIL image → the uint8 pixels every dataset stores: L or RGB, square, at the requested resolution.

One conversion for image folders and built-in datasets alike, so that a built-in set exported to PNG and
read back as a folder gives the same pixels:

- transparency (RGBA, LA, PA, palette or greyscale with a `transparency` key) is composited on white;
- palette, CMYK, YCbCr, LAB and HSV are converted to RGB by Pillow; 1-bit to greyscale;
- 16-bit greyscale (`I;16*`, and `I`, which is how Pillow opens 16-bit PNGs and TIFFs) is scaled to 8 bit
  by v / 257 (65535 → 255), where Pillow's own conversion would clip everything above 255;
- greyscale → RGB replicates the channel; RGB → greyscale uses Pillow's ITU-R 601-2 luma;
- the shorter side is resized to `resolution` (Pillow bicubic, which filters with a kernel widened by
  the scale factor, i.e. antialiased), then the centre square is cropped.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS: tuple[str, ...] = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_WIDE_GREY_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}
_GREY_MODES = {"L", "LA", "La", "1", "F"} | _WIDE_GREY_MODES


def _composite_on_white(img: Image.Image, grey: bool) -> Image.Image:
    rgba = np.asarray(img.convert("LA" if grey else "RGBA"), dtype=np.float32)
    colour, alpha = rgba[..., :-1], rgba[..., -1:] / 255.0
    out = np.rint(colour * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return Image.fromarray(out[..., 0] if grey else out, mode="L" if grey else "RGB")


def _wide_grey_to_l(img: Image.Image) -> Image.Image:
    values = np.asarray(img).astype(np.float64)
    return Image.fromarray(np.rint(np.clip(values, 0, 65535) / 257.0).astype(np.uint8), mode="L")


def to_channels(img: Image.Image, channels: int) -> Image.Image:
    """Convert `img` to mode L (`channels`=1) or RGB (`channels`=3) following the rules above."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    mode = img.mode
    if mode in _WIDE_GREY_MODES:
        img = _wide_grey_to_l(img)
    elif mode in _ALPHA_MODES or "transparency" in img.info:
        img = _composite_on_white(img, grey=mode in _GREY_MODES)
    elif mode in ("1", "F"):
        img = img.convert("L")
    elif mode not in ("L", "RGB"):
        img = img.convert("RGB")
    if channels == 1 and img.mode == "RGB":
        img = img.convert("L")
    elif channels == 3 and img.mode == "L":
        img = img.convert("RGB")
    return img


def resize_center_crop(img: Image.Image, resolution: int) -> Image.Image:
    """Resize the shorter side to `resolution` (bicubic, antialiased), then crop the centre square."""
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    w, h = img.size
    scale = resolution / min(w, h)
    size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
    if size != (w, h):
        img = img.resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    if size != (resolution, resolution):
        img = img.crop((left, top, left + resolution, top + resolution))
    return img


def image_to_array(img: Image.Image, resolution: int, channels: int) -> np.ndarray:
    """`img` → uint8 array (channels, resolution, resolution)."""
    img = resize_center_crop(to_channels(img, channels), resolution)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def fit_array(images: np.ndarray, resolution: int, channels: int) -> np.ndarray:
    """Bring uint8 images (N, C, H, W) to `channels` × `resolution`² with the same rules as a file.

    Arrays already at the target size skip Pillow; greyscale → RGB replication is done in numpy, which is
    exactly what Pillow does.
    """
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected uint8 images (N, 1|3, H, W), got {images.dtype} {images.shape}")
    n, c, h, w = images.shape
    if h == w == resolution and (c == channels or c == 1):
        return np.ascontiguousarray(np.repeat(images, channels, axis=1) if c != channels else images)
    out = np.empty((n, channels, resolution, resolution), dtype=np.uint8)
    for i in range(n):
        pixels = images[i, 0] if c == 1 else images[i].transpose(1, 2, 0)
        out[i] = image_to_array(Image.fromarray(pixels, mode="L" if c == 1 else "RGB"), resolution, channels)
    return out
