"""Generation parameters carried inside a PNG's text chunks, so that an image says how it was made.

Two text chunks are written: `latentdiff` holds the parameters as JSON (what `read_generation_params`
reads back, field for field) and `parameters` a one-line summary in words for people and other viewers
(AUTOMATIC1111's web UI uses that key for the same purpose). Only the JSON is ever read: the summary is
not parsed, so it cannot drift into a second format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from latentdiff import __version__
from latentdiff.config import ConfigError, from_dict, to_dict

PARAMS_KEY = "latentdiff"  # PNG tEXt key of the JSON record
SUMMARY_KEY = "parameters"  # PNG tEXt key of the human-readable line

Mode = Literal["generate", "img2img", "inpaint", "interpolate"]


@dataclass
class GenerationParams:
    """How one image was made. `seed` is the seed of this image alone: `pipe(num_images=1, seed=seed, …)`
    makes it again (a page that makes several images gives image k the seed `seed + k`)."""

    mode: Mode = "generate"
    run: str = ""  # the run folder, as the generating program saw it
    class_label: str | None = None  # class name (class-conditional runs)
    negative_class: str | None = None
    prompt: str | None = None  # text-conditioned runs
    negative_prompt: str | None = None
    seed: int = 0
    steps: int = 20
    sampler: str = "dpmpp_2m"
    guidance: float = 1.0
    # what `guidance` contrasts the model with: "cfg" its unconditional (or negative) self, "auto" the run's
    # guide model (autoguidance); images saved before this field existed were made with "cfg"
    guidance_kind: Literal["cfg", "auto"] = "cfg"
    height: int | None = None  # image size in pixels; None: the size the run was trained at
    width: int | None = None
    strength: float | None = None  # img2img: how far the input was noised
    seed_b: int | None = None  # interpolate between seeds: the other end of the walk
    prompt_b: str | None = None  # interpolate between prompts (at `seed`): the other end of the walk
    frames: int | None = None  # interpolate: images in the strip, both ends included
    version: str = __version__  # latentdiff version that wrote the image

    def summary(self) -> str:
        """One line in words, e.g. `class: 3, seed: 5, steps: 20, sampler: dpmpp_2m, guidance: 2`."""
        items = [(k, v) for k, v in to_dict(self).items() if v is not None and k not in ("run", "version")]
        items += [("run", self.run), ("latentdiff", self.version)]
        return ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in items)


def png_info(params: GenerationParams) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text(PARAMS_KEY, json.dumps(to_dict(params), sort_keys=True))
    info.add_text(SUMMARY_KEY, params.summary())
    return info


def save_png_with_params(image: Image.Image, path: str | Path, params: GenerationParams) -> Path:
    """Write `image` as a PNG carrying `params`; atomically, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        image.save(tmp, format="PNG", pnginfo=png_info(params))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_generation_params(path: str | Path) -> GenerationParams:
    """The parameters a PNG written by `save_png_with_params` carries; a ValueError naming the file (and
    the key) when it is not a readable PNG or carries none."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            fmt = img.format
            text = dict(getattr(img, "text", {}) or {})
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        reason = str(e).replace(f"'{path}'", path.name).replace(str(path), path.name)  # no server paths
        raise ValueError(f"cannot read {path.name}: not a readable image ({reason})") from None
    if fmt != "PNG":
        raise ValueError(f"{path.name} is a {fmt} image; generation parameters are read from PNG files only")
    if PARAMS_KEY not in text:
        raise ValueError(
            f"{path.name} carries no latentdiff generation parameters (no PNG text chunk {PARAMS_KEY!r}); "
            "only images saved by latentdiff's web UI or `latentdiff sample --from-png` do"
        )
    try:
        data = json.loads(text[PARAMS_KEY])
    except json.JSONDecodeError as e:
        raise ValueError(f"{path.name}: PNG text chunk {PARAMS_KEY!r} is not valid JSON ({e})") from None
    try:
        return from_dict(GenerationParams, data, f"{path.name}: {PARAMS_KEY}")
    except ConfigError as e:
        raise ValueError(str(e)) from None
