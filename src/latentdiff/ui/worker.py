"""The work behind the web page, without the web framework: the runs it serves, one generation with a
live preview and a cancel switch, the edits, and PNGs that carry their parameters.

`app.py` lays out the page and turns what happens here into what the browser shows; everything here is
plain Python over `LatentDiffusionPipeline`, so it is tested without a browser.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from latentdiff.data.image_convert import resize_center_crop, to_channels
from latentdiff.data.image_folder import load_image_file
from latentdiff.diffusion.guidance import check_guidance_scale
from latentdiff.io.generation_params import GenerationParams, save_png_with_params
from latentdiff.io.images import make_grid, to_pil, to_uint8
from latentdiff.pipeline import LatentDiffusionPipeline
from latentdiff.ui.reproduce import condition_kwargs, generate_image, is_text_conditioned

log = logging.getLogger(__name__)

MAX_STEPS = 500  # sampler steps the page accepts: more is a typo, not a wish (and T - 1 caps DDIM)
MAX_IMAGES = 16  # images per click: each is one sampling, one at a time
MAX_FRAMES = 16  # images in an interpolation strip
SIZE_FACTORS = (1.0, 1.5, 2.0)  # image sides offered, times the trained one (those the backbone takes)
SAMPLERS = ("dpmpp_2m", "ddim", "ddpm", "euler", "heun", "edm_stochastic")


class Cancelled(Exception):
    """Raised inside the sampler's callback when the user pressed Cancel: ends the sampling after the
    step in progress (samplers have no other way out)."""

    def __init__(self, step: int, steps: int) -> None:
        super().__init__(f"cancelled after step {step} of {steps}")
        self.step, self.steps = step, steps


@dataclass
class RunInfo:
    """What the page needs to know of a run to show its controls."""

    name: str
    path: Path
    conditioning: str  # "text", "class" or "none"
    class_names: list[str]
    image_size: int
    channels: int
    sizes: list[int] = field(default_factory=list)  # image sides the page offers, the trained one first
    has_guide: bool = False  # an autoguidance guide model (RUN/guide/) was loaded with the run

    def describe(self) -> str:
        cond = {
            "text": "text-conditioned",
            "class": f"{len(self.class_names)} classes",
            "none": "unconditional",
        }
        colour = "grey" if self.channels == 1 else "RGB"
        return f"**{self.name}** — {self.image_size}×{self.image_size} px {colour}, {cond[self.conditioning]}"


def run_names(paths: Sequence[Path]) -> list[str]:
    """A short unique name per run folder: its own name, with parent folders added while two collide."""
    paths = [Path(p).resolve() for p in paths]
    depth = 1
    while True:
        names = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(names)) == len(names) or depth > max(len(p.parts) for p in paths):
            return names
        depth += 1


@dataclass
class StepWatcher:
    """The sampler callback of one generation: stops it when `cancel` is set, counts steps, and every
    `preview_every` steps hands the decoded estimate x̂0 (uint8 HWC) of the first image to `on_preview`."""

    pipe: LatentDiffusionPipeline
    steps: int
    cancel: threading.Event
    on_step: Callable[[int, np.ndarray | None], None] | None = None
    preview_every: int = 0  # 0: about ten previews per sampling
    done: int = 0

    def __call__(self, info: dict[str, Any]) -> None:
        if self.cancel.is_set():
            raise Cancelled(self.done, self.steps)
        self.done = int(info["i"]) + 1
        every = self.preview_every or max(1, self.steps // 10)
        if self.on_step is None:
            return
        preview = None
        if self.done % every == 0 and self.done < self.steps:
            preview = to_uint8(self.pipe.decode(info["x0_pred"][:1]))[0]
            preview = preview[..., 0] if preview.shape[-1] == 1 else preview  # grey: H×W for the page
        self.on_step(self.done, preview)


def _check_frames(frames: int) -> None:
    if not 2 <= frames <= MAX_FRAMES:
        raise ValueError(f"an interpolation strip has 2 to {MAX_FRAMES} images, got {frames}")


@dataclass
class Studio:
    """The runs served (loaded once, at start) and the output folder every image is saved to."""

    runs: Sequence[Path]
    out: Path
    device: str = "auto"
    pipes: dict[str, LatentDiffusionPipeline] = field(default_factory=dict, init=False)
    infos: dict[str, RunInfo] = field(default_factory=dict, init=False)
    _save_lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        if not self.runs:
            raise ValueError("serve needs at least one run folder")
        self.out = Path(self.out)
        for name, path in zip(run_names(self.runs), self.runs, strict=True):
            pipe = LatentDiffusionPipeline.from_pretrained(path, device=self.device)
            pipe.progress = False
            ae = pipe.autoencoder
            conditioning = "text" if is_text_conditioned(pipe) else "class" if pipe.num_classes else "none"
            names = list(pipe.class_names) or [str(i) for i in range(pipe.num_classes)]
            size, multiple = pipe.image_size, pipe.size_multiple
            sizes = [s for f in SIZE_FACTORS if (s := round(size * f)) % multiple == 0]
            self.pipes[name] = pipe
            channels = ae.config.in_channels
            self.infos[name] = RunInfo(
                name, Path(path), conditioning, names, size, channels, sizes, pipe.guide is not None
            )

    # ------------------------------------------------------------------------------- checks
    def name_of(self, run: str) -> str:
        """The served run that `run` names: by its name on the page or by its folder (as a PNG records)."""
        if run in self.infos:
            return run
        for name, info in self.infos.items():
            if run and Path(run).resolve() == info.path.resolve():
                return name
        raise ValueError(f"unknown run {run!r}; served runs: {', '.join(self.infos)}")

    def pipe(self, run: str) -> LatentDiffusionPipeline:
        return self.pipes[self.name_of(run)]

    def check(self, params: GenerationParams) -> GenerationParams:
        """`params` with the run's class name normalised, or a ValueError saying which setting is wrong
        (the page's controls keep most values in range, but a saved PNG or an API call need not)."""
        pipe = self.pipe(params.run)
        if not 1 <= params.steps <= MAX_STEPS:
            raise ValueError(f"steps must be between 1 and {MAX_STEPS}, got {params.steps}")
        if params.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {params.sampler!r}; valid samplers: {', '.join(SAMPLERS)}")
        if not 0 <= params.seed < 2**63:
            raise ValueError(f"seed must be a whole number from 0 to 2^63 - 1, got {params.seed}")
        check_guidance_scale(params.guidance, "guidance", negative="a negative class")
        if params.strength is not None and not 0.0 <= params.strength <= 1.0:
            raise ValueError(f"strength must be between 0 and 1, got {params.strength}")
        condition_kwargs(pipe, params)  # prompt present where needed, no class for an unconditional run
        pipe.latent_size(params.height, params.width)  # a size the backbone takes
        info = self.infos[self.name_of(params.run)]
        names = info.class_names
        out = replace(params, run=str(info.path.resolve()))  # the folder: what `sample --from-png` loads
        for key in ("class_label", "negative_class"):
            value = getattr(params, key)
            if value not in (None, ""):
                out = replace(out, **{key: names[pipe.class_index(value)]})
            else:
                out = replace(out, **{key: None})
        if out.negative_class is not None and out.class_label is None:
            raise ValueError("a negative class needs a class to contrast with: pick a class too")
        if out.guidance_kind not in ("cfg", "auto"):
            raise ValueError(f"guidance kind must be 'cfg' or 'auto', got {out.guidance_kind!r}")
        if out.guidance_kind == "auto":
            if pipe.guide is None:
                raise ValueError(
                    "autoguidance needs the run's guide model (RUN/guide/, which `latentdiff train` trains); "
                    f"{info.name} has none: pick classifier-free guidance"
                )
            if out.negative_class is not None or out.negative_prompt:
                raise ValueError(
                    "a negative class or prompt steers classifier-free guidance, and autoguidance contrasts "
                    "the model with its guide instead: pick classifier-free guidance to use one"
                )
        elif out.guidance != 1.0 and out.class_label is None and out.prompt is None:
            raise ValueError(
                "classifier-free guidance other than 1 needs a class (or a prompt) to guide towards"
                + ("; or pick autoguidance, which this run's guide model gives" if info.has_guide else "")
            )
        return out

    # ------------------------------------------------------------------------------- saving
    def save(self, image: torch.Tensor | Image.Image, params: GenerationParams) -> Path:
        """`image` as the next numbered PNG in OUT/<run>/, with `params` in its text metadata."""
        folder = self.out / re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name_of(params.run))
        with self._save_lock:  # numbers are taken under the lock: two saves never pick the same name
            folder.mkdir(parents=True, exist_ok=True)
            taken = [int(m.group(1)) for p in folder.glob("*.png") if (m := re.match(r"(\d+)-", p.name))]
            path = folder / f"{max(taken, default=-1) + 1:05d}-{params.mode}-seed{params.seed}.png"
            pil = image if isinstance(image, Image.Image) else to_pil(image)
            save_png_with_params(pil, path, params)
        return path

    # ------------------------------------------------------------------------------- work
    def generate(
        self,
        params: GenerationParams,
        count: int,
        cancel: threading.Event,
        on_step: Callable[[int, int, np.ndarray | None], None] | None = None,
        on_image: Callable[[Path], None] | None = None,
    ) -> list[Path]:
        """`count` images, image k with seed `params.seed + k` (each one reproducible alone); each saved
        and passed to `on_image` as it is made. `on_step(k, step, preview)` follows the sampling.
        Raises `Cancelled` (the images finished before are kept and saved) when `cancel` is set."""
        params = self.check(params)
        if not 1 <= count <= MAX_IMAGES:
            raise ValueError(f"number of images must be between 1 and {MAX_IMAGES}, got {count}")
        pipe = self.pipe(params.run)
        paths = []
        for k in range(count):
            one = replace(params, seed=params.seed + k)
            report = None if on_step is None else (lambda step, preview, k=k: on_step(k, step, preview))
            watcher = StepWatcher(pipe, one.steps, cancel, report)
            image = generate_image(pipe, one, callback=watcher)[0]
            paths.append(self.save(image, one))
            if on_image is not None:
                on_image(paths[-1])
        return paths

    def load_input(self, run: str, image: Image.Image | str | Path) -> torch.Tensor:
        """An uploaded image (a file path or a PIL image) as the run's input: (1, C, S, S) in [-1, 1],
        converted, resized and centre-cropped as training data is."""
        info = self.infos[self.name_of(run)]
        if isinstance(image, str | Path):
            return load_image_file(image, info.channels, info.image_size)[None]
        arr = np.asarray(resize_center_crop(to_channels(image, info.channels), info.image_size), np.float32)
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        return torch.from_numpy(arr / 127.5 - 1.0)[None]

    def img2img(self, params: GenerationParams, image: Image.Image | str | Path) -> Path:
        params = self.check(replace(params, mode="img2img", height=None, width=None))  # the input's size
        if params.strength is None:
            raise ValueError("img2img needs a strength between 0 and 1")
        x = self.load_input(params.run, image)
        out = self.pipe(params.run).img2img(
            x,
            strength=params.strength,
            steps=params.steps,
            sampler=params.sampler,
            guidance_scale=params.guidance,
            guidance=params.guidance_kind,
            seed=params.seed,
            **condition_kwargs(self.pipe(params.run), params),
        )
        return self.save(out[0], params)

    def mask_from_layer(self, run: str, layer: Image.Image, background_size: tuple[int, int]) -> torch.Tensor:
        """A painted layer (opaque = regenerate) → a (1, 1, S, S) 0/1 mask on the model's grid, cropped and
        resized like the image it was painted over; a pixel is masked when over half of it was painted."""
        if layer.size != background_size:
            raise ValueError(
                f"the mask is {layer.size[0]}×{layer.size[1]} px but the image is "
                f"{background_size[0]}×{background_size[1]} px: paint the mask over the uploaded image"
            )
        alpha = layer.getchannel("A") if "A" in layer.getbands() else layer.convert("L")
        size = self.infos[self.name_of(run)].image_size
        grid = np.asarray(resize_center_crop(alpha, size), dtype=np.uint8)
        return torch.from_numpy((grid >= 128).astype(np.float32))[None, None]

    def inpaint(
        self, params: GenerationParams, image: Image.Image, mask: torch.Tensor, keep_unmasked: bool = True
    ) -> tuple[Path, torch.Tensor]:
        """Regenerate where `mask` is 1. With `keep_unmasked` the input's own pixels are pasted back where
        it is 0: the decoder alone would give its reconstruction there, which is close but not equal.
        Returns the saved PNG (`-input.png` and `-mask.png` beside it: what the model was given) and the
        result (1, C, S, S)."""
        params = self.check(replace(params, mode="inpaint", height=None, width=None))  # the input's size
        if mask.sum() == 0:
            raise ValueError("the mask is empty: paint over the part of the image to regenerate")
        x = self.load_input(params.run, image)
        pipe = self.pipe(params.run)
        out = pipe.inpaint(
            x,
            mask,
            steps=params.steps,
            sampler=params.sampler,
            guidance_scale=params.guidance,
            guidance=params.guidance_kind,
            seed=params.seed,
            **condition_kwargs(pipe, params),
        )
        if keep_unmasked:
            out = mask * out + (1 - mask) * x
        path = self.save(out[0], params)
        # what the model was given, beside the result: the PNG's settings alone cannot make it again
        to_pil(x[0]).save(path.with_name(f"{path.stem}-input.png"))
        Image.fromarray((mask[0, 0].numpy() * 255).astype(np.uint8), mode="L").save(
            path.with_name(f"{path.stem}-mask.png")
        )
        return path, out

    def interpolate(self, params: GenerationParams, seed_b: int, frames: int) -> Path:
        """A strip of `frames` images from `params.seed` to `seed_b` (spherical interpolation of the
        initial noise), saved as one PNG."""
        params = self.check(replace(params, mode="interpolate", seed_b=seed_b, frames=frames))
        _check_frames(frames)
        if not 0 <= seed_b < 2**63:
            raise ValueError(f"seed B must be a whole number from 0 to 2^63 - 1, got {seed_b}")
        pipe = self.pipe(params.run)
        kwargs = condition_kwargs(pipe, params)
        images = pipe.interpolate(
            params.seed,
            seed_b,
            n=frames,
            steps=params.steps,
            sampler=params.sampler,
            guidance_scale=params.guidance,
            guidance=params.guidance_kind,
            height=params.height,
            width=params.width,
            **kwargs,
        )
        return self.save(make_grid(images, nrow=frames, padding=1), params)

    def interpolate_prompts(self, params: GenerationParams, prompt_b: str, frames: int) -> Path:
        """A strip of `frames` images from `params.prompt` to `prompt_b` at one seed's noise (the encoded
        prompts interpolated: `pipe.interpolate_prompts`), saved as one PNG."""
        params = self.check(replace(params, mode="interpolate", prompt_b=prompt_b, frames=frames))
        if not is_text_conditioned(self.pipe(params.run)):
            raise ValueError("interpolating between prompts needs a text-conditioned run")
        if not (prompt_b or "").strip():
            raise ValueError("type prompt B, the other end of the walk (prompt A is the prompt above)")
        _check_frames(frames)
        if params.height is not None or params.width is not None:
            raise ValueError("interpolation between prompts makes images at the run's trained size only")
        pipe = self.pipe(params.run)
        images = pipe.interpolate_prompts(
            params.prompt,
            prompt_b,
            n=frames,
            seed=params.seed,
            steps=params.steps,
            sampler=params.sampler,
            guidance_scale=params.guidance,
            negative_prompt=params.negative_prompt,
            output_type="pt",
        )
        return self.save(make_grid(images, nrow=frames, padding=1), params)
