"""`load_dataset`: one entry point for a built-in dataset name or a folder of images."""

from __future__ import annotations

import logging
from pathlib import Path

from latentdiff.data.builtin import BUILTIN, builtin_names, load_builtin
from latentdiff.data.captions import has_captions
from latentdiff.data.dataset import ImageDataset, check_resolution
from latentdiff.data.image_folder import HOLDOUT_FRACTION, ImageFolder, find_images

log = logging.getLogger(__name__)


def load_dataset(
    name_or_path: str | Path,
    split: str = "train",
    resolution: int | None = None,
    channels: int | None = None,
    flip: bool = False,
    limit: int | None = None,
) -> ImageDataset:
    """A built-in dataset (`fashion-mnist`, `emoji`, `mnist`, `digits`, `shapes`) or an image folder.

    Built-ins default to their native resolution and channels. A folder needs `resolution`, defaults to
    3 channels and labels from its sub-folders when every image is in one. Its splits:

    - a folder with a `test/` sub-folder: a sub-folder named after `split` (`train/`, `test/`, `val/`...)
      is that split; without a `train/` one, `train` is the whole folder except `test/` (its images are
      never trained on, and `test` is not a class);
    - a folder without `test/`: `train` is `train/` if there is one, else the whole folder, minus the
      images that `image_folder.is_held_out` holds out (10 % by a hash of each path, the same in every
      command and on every machine); `test` is those held-out images. Any other split must be a
      sub-folder.

    The dataset's `.split_rule` says which rule made it (it is also logged).
    """
    if resolution is not None:
        check_resolution(resolution)
    if isinstance(name_or_path, str) and name_or_path.lower() in BUILTIN:
        return load_builtin(name_or_path, split, resolution, channels, flip, limit)
    root = Path(name_or_path).expanduser()
    if not root.exists():
        raise FileNotFoundError(
            f"dataset {str(name_or_path)!r} not found: no such folder, and not a built-in dataset "
            f"({', '.join(builtin_names())})"
        )
    if not root.is_dir():
        raise ValueError(f"{root} is a file; a dataset is a folder of images or a built-in name")
    has_test = (root / "test").is_dir()
    base = root / "train" if (root / "train").is_dir() else root
    options: dict = {}
    if has_test and (root / split).is_dir():
        folder = root / split
    elif has_test and split == "train":
        folder, options = root, {"exclude": ("test",)}
    elif not has_test and split in ("train", "test"):
        folder, options = base, {"holdout": split}
    elif (root / split).is_dir():
        folder = root / split
    else:
        raise ValueError(
            f"{root} has no '{split}' sub-folder; without one, an image folder has only a 'train' and a "
            f"'test' split ('test' is its test/ sub-folder, or else {HOLDOUT_FRACTION * 100:g} % of its "
            f"images held out by a hash of their path)"
        )
    if resolution is None:
        raise ValueError(f"resolution is required to load the image folder {root}")
    return ImageFolder(folder, resolution, channels or 3, flip=flip, limit=limit, split=split, **options)


def data_has_captions(name_or_path: str | Path, split: str = "train") -> bool:
    """Whether a dataset comes with captions (a built-in with captions, or a folder with `metadata.jsonl` or
    `NAME.txt` sidecars), found without decoding any image."""
    if isinstance(name_or_path, str) and name_or_path.lower() in BUILTIN:
        return BUILTIN[name_or_path.lower()].captions is not None
    root = Path(name_or_path).expanduser()
    if not root.is_dir():
        return False
    folder = root / split if (root / split).is_dir() else root
    return has_captions(folder, find_images(folder)) or has_captions(root, [])
