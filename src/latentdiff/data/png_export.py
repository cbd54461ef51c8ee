"""Write a dataset out as PNG files in class sub-folders: a folder that `ImageFolder` reads back with the
same pixels and the same labels."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from latentdiff.data.load import load_dataset

_UNSAFE = re.compile(r"[^A-Za-z0-9._ +-]+")
BATCH = 256


def class_folder_names(class_names: Sequence[str]) -> list[str]:
    """Folder names for the classes, in class order.

    Characters outside letters, digits, " ._+-" become "_" ("T-shirt/top" → "T-shirt_top"). `ImageFolder`
    numbers classes by sorted folder name, so when the cleaned names do not already sort in class order
    (or collide), each gets its zero-padded index as prefix ("00_T-shirt_top", "01_Trouser", ...).
    """
    cleaned = [_UNSAFE.sub("_", name).strip(" .") or "_" for name in class_names]
    if cleaned == sorted(cleaned) and len(set(cleaned)) == len(cleaned):
        return cleaned
    width = len(str(len(cleaned) - 1))
    return [f"{i:0{width}d}_{name}" for i, name in enumerate(cleaned)]


def export_dataset(
    name_or_path: str | Path,
    out_dir: str | Path,
    split: str = "train",
    limit: int | None = None,
    *,
    resolution: int | None = None,
    channels: int | None = None,
) -> int:
    """Write `split` of a dataset as PNGs under `out_dir/<class folder>/<index>.png` (directly in
    `out_dir` when unlabelled); returns the number of images. `out_dir` must be empty or absent."""
    dataset = load_dataset(name_or_path, split=split, resolution=resolution, channels=channels, limit=limit)
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty; export into a new folder")
    folders = (
        [out_dir / f for f in class_folder_names(dataset.class_names)] if dataset.num_classes else [out_dir]
    )
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(len(dataset) - 1)))
    with tqdm(total=len(dataset), desc=f"exporting {dataset.name}", unit="img", disable=None) as bar:
        for start in range(0, len(dataset), BATCH):
            indices = np.arange(start, min(start + BATCH, len(dataset)))
            pixels = dataset.uint8_batch(indices)
            for i, image in zip(indices, pixels, strict=True):
                folder = folders[dataset.labels[i]] if dataset.num_classes else out_dir
                array = image[0] if dataset.channels == 1 else image.transpose(1, 2, 0)
                Image.fromarray(array, mode="L" if dataset.channels == 1 else "RGB").save(
                    folder / f"{i:0{width}d}.png"
                )
            bar.update(len(indices))
    return len(dataset)
