"""A folder of the user's images (recursive) as an `ImageDataset`, with labels from sub-folder names.

Every file is fully decoded once on a first scan, so a truncated, empty or otherwise unreadable file is
found up front and skipped (reported once, with its path) rather than crashing a training run hours
later. Files and folders whose name starts with "." are ignored. JPEG/TIFF/WebP EXIF orientation is
applied, so photos come out upright. Pixel conversion: `latentdiff.data.image_convert`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from latentdiff.data.dataset import ImageDataset, spread_indices, uint8_to_float
from latentdiff.data.image_convert import IMAGE_EXTENSIONS, image_to_array, to_channels

log = logging.getLogger(__name__)

SHOWN_SKIPPED = 10
_UNREADABLE = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def find_images(root: Path) -> list[Path]:
    """Image files under `root` (by extension, case-insensitive), hidden ones excluded, in a sorted order
    that does not depend on the platform."""
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root).parts
        if (
            path.suffix.lower() in IMAGE_EXTENSIONS
            and not any(p.startswith(".") for p in rel)
            and path.is_file()
        ):
            found.append(path)
    return sorted(found, key=lambda p: p.relative_to(root).parts)


def folder_labels(
    root: Path, files: Sequence[Path], labels: bool | Literal["auto"]
) -> tuple[list[str], np.ndarray]:
    """(class names, label per file): classes are the sorted names of the first-level sub-folders (empty
    ones too, so that an exported split where some class has no image keeps the numbering)."""
    top = [p.relative_to(root).parts for p in files]
    in_subfolder = [len(parts) > 1 for parts in top]
    if labels == "auto":
        labels = bool(files) and all(in_subfolder)
    elif labels is True and not all(in_subfolder):
        loose = files[in_subfolder.index(False)]
        raise ValueError(
            f"labels=True needs every image in a first-level sub-folder of {root} (one per class), "
            f"but {loose} is not"
        )
    elif labels not in (True, False):
        raise ValueError(f"labels must be True, False or 'auto', got {labels!r}")
    if not labels:
        return [], np.zeros(len(files), dtype=np.int64)
    class_names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    index = {name: i for i, name in enumerate(class_names)}
    return class_names, np.array([index[parts[0]] for parts in top], dtype=np.int64)


def read_image(path: Path) -> Image.Image:
    """Open and fully decode `path` (raises on a truncated or unreadable file), upright per EXIF."""
    with Image.open(path) as img:
        img.load()
        return ImageOps.exif_transpose(img)


def load_image_file(path: str | Path, channels: int, resolution: int | None = None) -> torch.Tensor:
    """One image file → CHW float32 in [-1, 1], with the same conversion as `ImageFolder` (and its resize
    + centre crop when `resolution` is given); an unreadable file raises ValueError naming it."""
    path = Path(path)
    try:
        img = read_image(path)
    except _UNREADABLE as e:
        raise ValueError(f"cannot read image {path}: {e}") from e
    if resolution is None:
        arr = np.asarray(to_channels(img, channels), dtype=np.uint8)
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    else:
        arr = image_to_array(img, resolution, channels)
    return uint8_to_float(arr[None])[0]


class ImageFolder(ImageDataset):
    """Images under `root`, resized (shorter side) to `resolution` and centre-cropped, `channels` 1 or 3.

    `labels`: "auto" uses first-level sub-folder names as classes when every image lies in one, True
    requires it, False ignores folders; every first-level sub-folder is then a class, even an empty one.
    `cache`: keep the decoded uint8 images in memory (decode once); otherwise each access decodes its
    file again. `limit`: keep that many files spread evenly over the sorted list. `.files` are the images
    kept, `.skipped` the unreadable ones.
    """

    def __init__(
        self,
        root: str | Path,
        resolution: int,
        channels: int = 3,
        flip: bool = False,
        labels: bool | Literal["auto"] = "auto",
        cache: bool = True,
        *,
        limit: int | None = None,
        split: str = "train",
    ) -> None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"image folder not found: {root}")
        candidates = find_images(root)
        class_names, file_labels = folder_labels(root, candidates, labels)
        keep = spread_indices(len(candidates), limit)
        super().__init__(
            name=str(root),
            split=split,
            resolution=resolution,
            channels=channels,
            labels=file_labels[keep],
            class_names=class_names,
            flip=flip,
        )
        self.root = root
        files = [candidates[i] for i in keep]
        readable, self.skipped, self.images = self._scan(files, cache)
        self.files = [files[i] for i in readable]
        self.labels = self.labels[readable]
        if not self.files:
            skipped = f" ({len(self.skipped)} unreadable file(s) skipped)" if self.skipped else ""
            raise ValueError(
                f"no readable image found in {root}{skipped}; looked for files ending in "
                f"{', '.join(IMAGE_EXTENSIONS)} (any case, in sub-folders too)"
            )

    def _scan(self, files: list[Path], cache: bool) -> tuple[list[int], list[Path], np.ndarray | None]:
        """Decode every file once: (positions of the readable ones, unreadable paths, pixels if cached)."""
        shape = (self.channels, self.resolution, self.resolution)
        images = np.empty((len(files), *shape), dtype=np.uint8) if cache else None
        readable, skipped = [], []
        for i, path in enumerate(
            tqdm(files, desc=f"reading {self.root.name}", unit="img", disable=None, leave=False)
        ):
            try:
                pixels = image_to_array(read_image(path), self.resolution, self.channels)
            except _UNREADABLE as e:
                log.debug("skipping %s: %s", path, e)
                skipped.append(path)
                continue
            if images is not None:
                images[len(readable)] = pixels
            readable.append(i)
        if skipped:
            shown = ", ".join(str(p) for p in skipped[:SHOWN_SKIPPED])
            more = f" and {len(skipped) - SHOWN_SKIPPED} more" if len(skipped) > SHOWN_SKIPPED else ""
            log.warning(
                "%s: skipped %d unreadable image file(s) (truncated, empty or not an image): %s%s",
                self.root, len(skipped), shown, more,
            )  # fmt: skip
        if images is not None and skipped:
            images = images[: len(readable)].copy()  # release the rows reserved for unreadable files
        return readable, skipped, images

    def uint8_batch(self, indices: np.ndarray) -> np.ndarray:
        if self.images is not None:
            return self.images[indices]
        out = np.empty((len(indices), self.channels, self.resolution, self.resolution), dtype=np.uint8)
        for row, i in enumerate(indices):
            path = self.files[i]
            try:
                out[row] = image_to_array(read_image(path), self.resolution, self.channels)
            except _UNREADABLE as e:
                raise ValueError(
                    f"{path}: could not be read any more ({e}); it was readable when scanned"
                ) from e
        return out
