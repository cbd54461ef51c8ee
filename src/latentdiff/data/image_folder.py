"""A folder of the user's images (recursive) as an `ImageDataset`, with labels from sub-folder names.

Every file is fully decoded once on a first scan, so a truncated, empty or otherwise unreadable file is
found up front and skipped (reported once, with its path) rather than crashing a training run hours
later. Files and folders whose name starts with "." are ignored. JPEG/TIFF/WebP EXIF orientation is
applied, so photos come out upright. Pixel conversion: `latentdiff.data.image_convert`.

Held-out split: a folder without a `test/` sub-folder is split by `is_held_out`, a rule on each file's own
path (a hash of it), so the same file is in the same split on every machine, in every command, and adding
images never moves an existing one between splits. `ImageFolder(..., holdout="train" | "test")` applies it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from latentdiff.data.captions import folder_captions
from latentdiff.data.dataset import ImageDataset, check_fits_in_memory, spread_indices, uint8_to_float
from latentdiff.data.image_convert import IMAGE_EXTENSIONS, image_to_array, to_channels

log = logging.getLogger(__name__)

SHOWN_SKIPPED = 10
MAX_PIXELS_ENV = "LATENTDIFF_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 50_000_000
_UNREADABLE = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)

HOLDOUT_FRACTION = 0.1
"""The share of a folder's images held out as its test split when it has no `test/` sub-folder: a file is
held out when the first 8 bytes of the SHA-1 of its path relative to the folder (POSIX form, e.g.
"cats/001.png"), read as a big-endian fraction of 2**64, fall below it (`is_held_out`)."""


def is_held_out(relative_path: str, fraction: float = HOLDOUT_FRACTION) -> bool:
    """Whether the file at `relative_path` (POSIX, relative to the folder being split) is in the held-out
    (test) part of that folder. It depends on that path alone, not on the other files: adding or removing
    images never moves an existing image between the splits, and about `fraction` of the files are held
    out."""
    digest = hashlib.sha1(relative_path.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def _images(count: int) -> str:
    return f"{count:,} image{'' if count == 1 else 's'}"


def _percent(fraction: float) -> str:
    return f"{fraction * 100:g} %"


class ImageTooLarge(ValueError):
    """An image file whose header gives more pixels than the limit; it is refused without decoding it."""

    def __init__(self, message: str, size: tuple[int, int]) -> None:
        super().__init__(message)
        self.size = size


def _shown(items: Sequence[object]) -> str:
    """The first `SHOWN_SKIPPED` items, comma-separated, and how many more."""
    more = f" and {len(items) - SHOWN_SKIPPED} more" if len(items) > SHOWN_SKIPPED else ""
    return ", ".join(str(item) for item in items[:SHOWN_SKIPPED]) + more


def max_image_pixels() -> int:
    """The most pixels (width × height) an image file may have: `$LATENTDIFF_MAX_IMAGE_PIXELS`, else 50 MP.

    Pillow's own decompression-bomb limit (2 × `PIL.Image.MAX_IMAGE_PIXELS`, about 179 MP) still applies
    above that.
    """
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (value >= 1 and value.is_integer()):
        raise ValueError(
            f"{MAX_PIXELS_ENV}={raw!r} must be a positive whole number of pixels "
            f"(default {DEFAULT_MAX_PIXELS})"
        )
    return int(value)


def find_images(root: Path) -> list[Path]:
    """Image files under `root` (by extension, case-insensitive), hidden ones excluded, in a sorted order
    that does not depend on the platform.

    Symlinked files and folders are followed. A symlinked folder that leads back to a folder already on
    the way down (a loop: it points at `root`, one of its parents or a folder being walked) is not
    entered, and each such link is reported once in a warning.
    """
    found: list[Path] = []
    loops: list[tuple[Path, str]] = []
    # (folder, real paths of the folders walked to reach it, itself included)
    stack: list[tuple[Path, tuple[str, ...]]] = [(root, (os.path.realpath(root),))]
    while stack:
        folder, chain = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as e:
            log.warning("%s: cannot list this folder (%s); its images are left out", folder, e)
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()  # follows symlinks; a dangling link is neither dir nor file
                is_file = not is_dir and entry.is_file()
            except OSError:  # e.g. a link chain too long to resolve (ELOOP)
                loops.append((path, "unresolvable"))
                continue
            if is_dir:
                real = os.path.realpath(path) if entry.is_symlink() else os.path.join(chain[-1], entry.name)
                if any(Path(seen).is_relative_to(real) for seen in chain):
                    loops.append((path, real))
                    continue
                stack.append((path, (*chain, real)))
            elif is_file and path.suffix.lower() in IMAGE_EXTENSIONS:
                found.append(path)
    if loops:
        log.warning(
            "%s: not following %d symlinked folder(s) that loop back to a folder already being read: %s",
            root, len(loops), _shown([f"{link} -> {target}" for link, target in loops]),
        )  # fmt: skip
    return sorted(found, key=lambda p: p.relative_to(root).parts)


def folder_labels(
    root: Path,
    files: Sequence[Path],
    labels: bool | Literal["auto"],
    *,
    exclude: Collection[str] = (),
) -> tuple[list[str], np.ndarray]:
    """(class names, label per file): classes are the sorted names of the first-level sub-folders (empty
    ones too, so that an exported split where some class has no image keeps the numbering; symlinked ones
    too, except a link that loops back to `root` or above it; not those named in `exclude`)."""
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
    real_root = Path(os.path.realpath(root))
    class_names = sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir()
        and not p.name.startswith(".")
        and p.name not in exclude
        and not real_root.is_relative_to(os.path.realpath(p))
    )
    index = {name: i for i, name in enumerate(class_names)}
    return class_names, np.array([index[parts[0]] for parts in top], dtype=np.int64)


def _in_subfolder(root: Path, path: Path, names: Collection[str]) -> bool:
    parts = path.relative_to(root).parts
    return len(parts) > 1 and parts[0] in names


def _split_rule(root: Path, files: Sequence[Path], holdout: str | None, exclude: Collection[str]) -> str:
    """Which files of `root` a split takes, in words (the counts of a hash split are added after)."""
    if holdout == "test":
        return f"held out by path hash: {_percent(HOLDOUT_FRACTION)} of {root}"
    if holdout == "train":
        return f"{root} minus the {_percent(HOLDOUT_FRACTION)} held out by path hash"
    rule = f"all {len(files):,} images of {root}"
    if exclude:
        rule += f" except its {', '.join(f'{name}/' for name in sorted(exclude))} sub-folder"
        rule += "s" if len(exclude) > 1 else ""
    return rule


def _empty_part(root: Path, count: int, holdout: str) -> str:
    rule = "a SHA-1 hash of each path picks the held-out files: latentdiff.data.image_folder.is_held_out"
    if holdout == "test":
        return (
            f"{root} has no 'test' sub-folder and none of its {_images(count)} is held out by the "
            f"{_percent(HOLDOUT_FRACTION)} rule ({rule}); add more images, or put the test images in a "
            f"'test' sub-folder"
        )
    return (
        f"all {_images(count)} of {root} are held out for the test split by the {_percent(HOLDOUT_FRACTION)} "
        f"rule ({rule}), which leaves none to train on; add more images, or put the test images in a "
        f"'test' sub-folder"
    )


def read_image(path: Path, max_pixels: int | None = None) -> Image.Image:
    """Open and fully decode `path` (raises on a truncated or unreadable file), upright per EXIF.

    An image with more than `max_pixels` pixels (default: `max_image_pixels()`) raises `ImageTooLarge`
    before anything is decoded: the size comes from the file's header.
    """
    limit = max_image_pixels() if max_pixels is None else max_pixels
    with warnings.catch_warnings():  # our limit below replaces Pillow's DecompressionBombWarning
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        opened = Image.open(path)
    with opened as img:
        w, h = img.size
        if w * h > limit:
            raise ImageTooLarge(
                f"{path}: {w}×{h} px ({w * h / 1e6:.1f} MP) is over the limit of {limit / 1e6:g} MP per "
                f"image; downscale it, or raise the limit with {MAX_PIXELS_ENV}=<pixels>",
                (w, h),
            )
        img.load()
        return ImageOps.exif_transpose(img)


def load_image_file(path: str | Path, channels: int, resolution: int | None = None) -> torch.Tensor:
    """One image file → CHW float32 in [-1, 1], with the same conversion as `ImageFolder` (and its resize
    + centre crop when `resolution` is given); an unreadable file raises ValueError naming it."""
    path = Path(path)
    try:
        img = read_image(path)
    except ImageTooLarge:
        raise
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
    file again. `limit`: keep that many files spread evenly over the sorted list. `max_pixels`: images
    larger than this (read from the header, never decoded) are skipped; default `max_image_pixels()`.
    `.files` are the images kept, `.skipped` the unreadable and the too large ones (`.too_large`).

    `holdout`: None keeps every file; "train" keeps the files that `is_held_out` leaves in (about 90 %),
    "test" only the held-out ones (a "test" split with none raises ValueError). Classes and labels come
    from all the files before that, so both parts number the classes alike. `exclude`: names of
    first-level sub-folders left out entirely, files and class (e.g. "test" when the train split is a
    folder whose `test/` sub-folder holds the test split). `limit` applies after both.
    Captions (`metadata.jsonl` or `NAME.txt` sidecars, `data.captions`) are in `.captions` (None: none).
    `.holdout` says which part this is (None: no hash split) and `.split_rule` says in words which files
    were taken, for logs and reports.
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
        max_pixels: int | None = None,
        holdout: Literal["train", "test"] | None = None,
        exclude: Collection[str] = (),
    ) -> None:
        if holdout not in (None, "train", "test"):
            raise ValueError(f"holdout must be None, 'train' or 'test', got {holdout!r}")
        self.max_pixels = max_image_pixels() if max_pixels is None else int(max_pixels)
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"image folder not found: {root}")
        candidates = find_images(root)
        if exclude:
            candidates = [p for p in candidates if not _in_subfolder(root, p, exclude)]
        class_names, file_labels = folder_labels(root, candidates, labels, exclude=exclude)
        self.holdout = holdout
        self.split_rule = _split_rule(root, candidates, holdout, exclude)
        if holdout is not None:
            held = np.array([is_held_out(p.relative_to(root).as_posix()) for p in candidates], dtype=bool)
            chosen = np.flatnonzero(held if holdout == "test" else ~held)
            if candidates and not len(chosen):
                raise ValueError(_empty_part(root, len(candidates), holdout))
            candidates = [candidates[i] for i in chosen]
            file_labels = file_labels[chosen]
            self.split_rule += f" ({len(candidates):,} of {len(held):,} images)"
            log.info("%s split: %s", split, self.split_rule)
        elif exclude:
            log.info("%s split: %s", split, self.split_rule)
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
            big = len(self.too_large)
            limit = f"over the {self.max_pixels / 1e6:g} MP limit of {MAX_PIXELS_ENV}"
            counts = [f"{len(self.skipped) - big} unreadable file(s)"] if len(self.skipped) > big else []
            counts += [f"{big} file(s) {limit}"] if big else []
            skipped = f" ({' and '.join(counts)} skipped)" if counts else ""
            raise ValueError(
                f"no readable image found in {root}{skipped}; looked for files ending in "
                f"{', '.join(IMAGE_EXTENSIONS)} (any case, in sub-folders too)"
            )
        self.captions = folder_captions(root, self.files)

    def _scan(self, files: list[Path], cache: bool) -> tuple[list[int], list[Path], np.ndarray | None]:
        """Decode every file once: (positions of the readable ones, skipped paths, pixels if cached)."""
        shape = (self.channels, self.resolution, self.resolution)
        if cache:
            check_fits_in_memory(str(self.root), len(files), self.channels, self.resolution)
        images = np.empty((len(files), *shape), dtype=np.uint8) if cache else None
        readable: list[int] = []
        unreadable: list[Path] = []
        too_large: list[str] = []  # "path (W×H px)"
        skipped: list[Path] = []
        self.too_large: list[Path] = []
        for i, path in enumerate(
            tqdm(files, desc=f"reading {self.root.name}", unit="img", disable=None, leave=False)
        ):
            try:
                pixels = image_to_array(read_image(path, self.max_pixels), self.resolution, self.channels)
            except ImageTooLarge as e:
                log.debug("skipping %s", e)
                too_large.append(f"{path} ({e.size[0]}×{e.size[1]} px)")
                self.too_large.append(path)
                skipped.append(path)
                continue
            except _UNREADABLE as e:
                log.debug("skipping %s: %s", path, e)
                unreadable.append(path)
                skipped.append(path)
                continue
            if images is not None:
                images[len(readable)] = pixels
            readable.append(i)
        if unreadable:
            log.warning(
                "%s: skipped %d unreadable image file(s) (truncated, empty or not an image): %s",
                self.root, len(unreadable), _shown(unreadable),
            )  # fmt: skip
        if too_large:
            log.warning(
                "%s: skipped %d image file(s) over the limit of %g MP per image, without decoding them "
                "(downscale them, or raise the limit with %s=<pixels>): %s",
                self.root, len(too_large), self.max_pixels / 1e6, MAX_PIXELS_ENV, _shown(too_large),
            )  # fmt: skip
        if images is not None and skipped:
            images = images[: len(readable)].copy()  # release the rows reserved for skipped files
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
