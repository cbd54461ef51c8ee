"""`shapes`: a generated, captioned dataset for measuring prompt following (text-to-image).

Each 32×32 RGB image holds one shape (`SHAPES`) of one colour (`COLOURS`) at one of 9 positions (a 3×3
grid, `POSITIONS`) in one of two sizes, on a plain dark-grey background, jittered by up to one pixel.
Captions describe it in several phrasings ("a small red circle in the top left", "red circle, top-left,
small", ...). The class of an image is its colour–shape–position combination.

Compositional split: the combinations with ``(5·colour + 3·shape + position) mod 9 == 0`` (one position
per colour–shape pair, 1/9 ≈ 11 % of all combinations; every colour, shape and position still appears in
training) are never in `train`; `test` holds exactly them. A model that draws a held-out combination has
composed it from parts it saw apart.

Everything is generated from fixed seeds: the same on every machine and every run. Shapes are drawn 4×
larger and box-filtered down, so edges are anti-aliased while the interior keeps the exact colour.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from latentdiff.data.image_convert import fit_array
from latentdiff.data.source import BuiltinSource, SourceSplit, data_root, source_fingerprint

NAME = "shapes"
VERSION = 1
RESOLUTION = 32
SUPERSAMPLE = 4
BACKGROUND = (48, 48, 48)
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "orange": (245, 130, 20),
    "yellow": (245, 230, 30),
    "green": (30, 190, 50),
    "cyan": (30, 220, 230),
    "blue": (40, 70, 240),
    "purple": (150, 40, 210),
    "pink": (250, 140, 200),
}
SHAPES = ("circle", "square", "triangle", "star", "cross")
ROWS = ("top", "middle", "bottom")
COLUMNS = ("left", "center", "right")
POSITIONS = tuple("center" if (r, c) == ("middle", "center") else f"{r} {c}" for r in ROWS for c in COLUMNS)
SIZES = {"small": 5.0, "large": 8.5}  # outer diameter in pixels at 32 px
VARIANTS = 6  # jittered renderings of every (combination, size) in its split
HOLDOUT_MODULUS = 9


def combinations() -> list[tuple[int, int, int]]:
    """Every (colour, shape, position) index triple, in class order."""
    return [(c, s, p) for c in range(len(COLOURS)) for s in range(len(SHAPES)) for p in range(len(POSITIONS))]


def is_held_out(colour: int, shape: int, position: int) -> bool:
    """Whether a colour–shape–position combination is kept out of `train` (it is the `test` split)."""
    return (5 * colour + 3 * shape + position) % HOLDOUT_MODULUS == 0


def class_names(path: Path | None = None) -> list[str]:
    colours = list(COLOURS)
    return [f"{colours[c]} {SHAPES[s]} {POSITIONS[p]}" for c, s, p in combinations()]


def captions_for(colour: str, shape: str, position: str, size: str) -> list[str]:
    """The phrasings of one image, e.g. 'a small red circle in the top left'."""
    where = "in the center" if position == "center" else f"in the {position}"
    hyphen = position.replace(" ", "-")
    return [
        f"a {size} {colour} {shape} {where}",
        f"{colour} {shape}, {hyphen}, {size}",
        f"a {colour} {shape} {where}",
        f"{size} {colour} {shape} at {position}",
    ]


def _polygon(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if kind == "triangle":
        angles = np.deg2rad([-90, 30, 150])
        return [(cx + r * np.cos(a), cy + r * np.sin(a) + 0.15 * r) for a in angles]
    if kind == "star":
        pts = []
        for i in range(10):
            a = np.deg2rad(-90 + 36 * i)
            rr = r if i % 2 == 0 else 0.45 * r
            pts.append((cx + rr * np.cos(a), cy + rr * np.sin(a)))
        return pts
    raise ValueError(kind)


def render(colour: int, shape: int, position: int, size: str, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """One image, uint8 (3, 32, 32)."""
    k = SUPERSAMPLE
    img = Image.new("RGB", (RESOLUTION * k, RESOLUTION * k), BACKGROUND)
    draw = ImageDraw.Draw(img)
    row, col = divmod(position, 3)
    cell = RESOLUTION / 3
    cx, cy = ((col + 0.5) * cell + dx) * k, ((row + 0.5) * cell + dy) * k
    r = SIZES[size] / 2 * k
    fill = list(COLOURS.values())[colour]
    kind = SHAPES[shape]
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif kind == "square":
        s = r * 0.85
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
    elif kind == "cross":
        w = r * 0.36
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
    else:
        draw.polygon(_polygon(kind, cx, cy, r), fill=fill)
    small = img.resize((RESOLUTION, RESOLUTION), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.uint8).transpose(2, 0, 1)


def split_items(split: str) -> list[tuple[int, int, int, str, float, float]]:
    """(colour, shape, position, size, dx, dy) of every image of `split`, in a fixed order."""
    held = split == "test"
    rng = np.random.default_rng(20240615 + (1 if held else 0))
    items = []
    for c, s, p in combinations():
        if is_held_out(c, s, p) != held:
            continue
        for size in SIZES:
            for _ in range(VARIANTS):
                dx, dy = (float(v) for v in rng.uniform(-1.0, 1.0, size=2))
                items.append((c, s, p, size, dx, dy))
    return items


def _count(split: str) -> int:
    held = sum(is_held_out(*combo) for combo in combinations())
    n = held if split == "test" else len(combinations()) - held
    return n * len(SIZES) * VARIANTS


COUNTS = {"train": _count("train"), "test": _count("test")}


def locate() -> Path:
    return data_root() / NAME  # generated: nothing needs to exist there


def fingerprint(path: Path) -> str:
    return source_fingerprint(NAME, VERSION, RESOLUTION, VARIANTS)


def split_captions(path: Path, split: str) -> list[list[str]]:
    colours = list(COLOURS)
    return [
        captions_for(colours[c], SHAPES[s], POSITIONS[p], size) for c, s, p, size, _, _ in split_items(split)
    ]


def read_split(path: Path, split: str) -> SourceSplit:
    items = split_items(split)
    n_pos, n_shape = len(POSITIONS), len(SHAPES)
    labels = np.array([(c * n_shape + s) * n_pos + p for c, s, p, *_ in items], dtype=np.int64)

    def decode(indices: np.ndarray, resolution: int, channels: int) -> np.ndarray:
        pixels = np.stack([render(*items[i]) for i in indices]) if len(indices) else np.zeros((0, 3, 32, 32))
        return fit_array(pixels.astype(np.uint8), resolution, channels)

    return SourceSplit(labels=labels, decode=decode, cheap_native=False)


SOURCE = BuiltinSource(
    name=NAME,
    description=(
        "generated 32x32 RGB shapes: 8 colours x 5 shapes x 9 positions x 2 sizes, captioned; "
        "11 % of colour-shape-position combinations only in test (prompt following)"
    ),
    counts=COUNTS,
    shape=(3, RESOLUTION, RESOLUTION),
    install_command=lambda: "nothing to install: generated on first use",
    locate=locate,
    fingerprint=fingerprint,
    class_names=class_names,
    read_split=read_split,
    captions=split_captions,
)
