"""`load_dataset`: one entry point for a built-in dataset name or a folder of images."""

from __future__ import annotations

from pathlib import Path

from latentdiff.data.builtin import BUILTIN, builtin_names, load_builtin
from latentdiff.data.dataset import ImageDataset, check_resolution
from latentdiff.data.image_folder import ImageFolder


def load_dataset(
    name_or_path: str | Path,
    split: str = "train",
    resolution: int | None = None,
    channels: int | None = None,
    flip: bool = False,
    limit: int | None = None,
) -> ImageDataset:
    """A built-in dataset (`fashion-mnist`, `emoji`, `mnist`, `digits`) or an image folder.

    Built-ins default to their native resolution and channels. A folder needs `resolution`, defaults to
    3 channels and labels from its sub-folders when every image is in one; if it has a sub-folder named
    after `split` (e.g. `train/`, `test/`), that sub-folder is the split, otherwise the folder is the
    `train` split.
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
    folder = root / split
    if not folder.is_dir():
        if split != "train":
            raise ValueError(
                f"{root} has no '{split}' sub-folder; without one, an image folder is the train split"
            )
        folder = root
    if resolution is None:
        raise ValueError(f"resolution is required to load the image folder {root}")
    return ImageFolder(folder, resolution, channels or 3, flip=flip, limit=limit, split=split)
