"""What `latentdiff train` reads from the data before it plans: channels (grey when every image is), a
resolution from the images' sizes, classes from sub-folders, and whether captions make the run
text-conditioned (`inspect_data` -> `DataSummary`, with the reasons as notes the plan prints)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

# channels and side of the built-in datasets as the planner trains them
NATIVE = {"fashion-mnist": (1, 32), "mnist": (1, 32), "emoji": (3, 64), "digits": (1, 8), "shapes": (3, 32)}


@dataclass
class DataSummary:
    """What `latentdiff train` needs to know about the data, and why it chose what it chose."""

    name: str
    channels: int
    resolution: int
    num_images: int
    num_classes: int
    class_names: list[str]
    notes: list[str] = field(default_factory=list)
    captioned: bool = False  # captions found: Stage 2 is text-conditioned


def _power_of_two_at_most(n: int) -> int:
    return 1 << (max(1, n).bit_length() - 1)


def inspect_data(name_or_path: str, resolution: int | None = None, device: str = "cpu") -> DataSummary:
    """Channels (grey when every image is), a resolution (the largest power of two not above the images'
    median shorter side, at most 64 px on a CPU and 256 on a GPU unless `resolution` is given) and classes
    (sub-folders) of a built-in dataset or an image folder."""
    from PIL import Image

    from latentdiff.data.builtin import BUILTIN
    from latentdiff.data.image_folder import find_images, folder_labels
    from latentdiff.data.load import data_has_captions

    notes: list[str] = []
    if name_or_path.lower() in BUILTIN:
        channels, native = NATIVE.get(name_or_path.lower(), (3, 64))
        res = resolution or native
        notes.append(f"built-in `{name_or_path}`: {'grey' if channels == 1 else 'RGB'}, trained at {res} px")
        from latentdiff.data import load_dataset

        ds = load_dataset(name_or_path, "train", res, channels)
        names = list(ds.class_names or [])
        captioned = ds.captions is not None
        if captioned:
            notes.append("captioned: text-conditioned (a tokenizer and text encoder trained with the model)")
        return DataSummary(name_or_path, channels, res, len(ds), len(names), names, notes, captioned)

    root = Path(name_or_path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"--data {name_or_path}: no such folder, and not a built-in dataset")
    files = find_images(root / "train" if (root / "train").is_dir() else root)
    if not files:
        raise ValueError(f"--data {root}: no image files found")
    step = max(1, len(files) // 500)  # read the headers of up to ~500 files, spread over the folder
    sides, grey = [], True
    for path in files[::step]:
        try:
            with Image.open(path) as im:
                sides.append(min(im.size))
                grey &= im.mode in ("1", "L", "LA", "I", "I;16", "F") or _is_grey_rgb(im)
        except OSError:
            continue
    if not sides:
        raise ValueError(f"--data {root}: none of the sampled image files could be read")
    channels = 1 if grey else 3
    notes.append(f"{'grey' if grey else 'colour'} images (read {len(sides)} of {len(files)} files' headers)")
    cap = 256 if device.startswith("cuda") else 64
    median = int(statistics.median(sides))
    if resolution is None:
        resolution = max(8, min(cap, _power_of_two_at_most(median)))
        why = f"median shorter side {median} px"
        if _power_of_two_at_most(median) > cap:
            why += f", capped at {cap} px on this device (--resolution to override)"
        notes.append(f"resolution {resolution} px ({why})")
    else:
        notes.append(f"resolution {resolution} px (asked for; median shorter side {median} px)")
    class_names, _ = folder_labels(root / "train" if (root / "train").is_dir() else root, files, "auto")
    names = list(class_names or [])
    captioned = data_has_captions(str(root))
    if captioned:
        notes.append("captions (metadata.jsonl or NAME.txt): text-conditioned")
    else:
        notes.append(
            f"{len(names)} classes from sub-folders: class-conditional"
            if names
            else "no class sub-folders: unconditional"
        )
    return DataSummary(str(root), channels, resolution, len(files), len(names), names, notes, captioned)


def _is_grey_rgb(im) -> bool:
    """An RGB(A) image whose three channels are equal (a grey image saved as colour)."""
    if im.mode not in ("RGB", "RGBA"):
        return False
    small = im.convert("RGB").resize((16, 16))
    r, g, b = small.split()
    return r.tobytes() == g.tobytes() == b.tobytes()
