"""`LatentDiffusionPipeline`: where the two stages meet (Rombach et al. 2022, sec. 3.3).

Generation samples z_T ~ N(0, I) in latent space, runs the learned reverse diffusion to z_0 and decodes
x = D(z_0 / scale + shift) with the frozen decoder. The same pieces give reconstruction and, in
`pipeline_editing`, img2img, inpainting, interpolation and the denoising trajectory. A text-conditioned run
(`text_encoder/` + `tokenizer.json`) takes `prompt=` wherever a class works, and `negative_prompt=` as what
guidance steers away from (the unconditional branch of classifier-free guidance, Ho & Salimans 2022, eq. 6,
with the negative prompt in place of the empty one).
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from latentdiff.autoencoder.model import Autoencoder
from latentdiff.config import from_dict
from latentdiff.diffusion.config import DiffusionConfig, upgrade_diffusion_dict
from latentdiff.diffusion.guidance import Denoiser, check_guidance_scale
from latentdiff.diffusion.preconditioning import Preconditioning
from latentdiff.diffusion.samplers import get_sampler
from latentdiff.diffusion.schedule import make_schedule
from latentdiff.io.autoencoder_record import check_autoencoder_pair
from latentdiff.io.checkpoint import CheckpointError, read_json
from latentdiff.io.images import to_pil, to_uint8
from latentdiff.nets.backbones import GUIDE_FOLDER, find_backbone_folder, load_backbone
from latentdiff.pipeline_editing import Labels, OutputType, PipelineEditing, Prompts
from latentdiff.text.conditioned import is_text_run, load_text_conditioned
from latentdiff.training.distributed import resolve_device

log = logging.getLogger(__name__)


class LatentDiffusionPipeline(PipelineEditing):
    """Frozen autoencoder + backbone (any of `nets.backbones`) + noise schedule and preconditioning; call
    it to generate images."""

    def __init__(
        self,
        autoencoder: Autoencoder,
        backbone: torch.nn.Module,
        diffusion: DiffusionConfig,
        class_names: Sequence[str] | None = None,
        device: str | torch.device = "auto",
    ) -> None:
        self.device = resolve_device(str(device)) if not isinstance(device, torch.device) else device
        self.autoencoder = autoencoder.to(self.device).eval().requires_grad_(False)
        self.backbone = backbone.to(self.device).eval().requires_grad_(False)
        self.diffusion = diffusion
        self.schedule = make_schedule(diffusion)
        self.precond = Preconditioning(diffusion.prediction, diffusion.sigma_data)
        self.class_names = list(class_names or [])
        self.progress = True
        # autoguidance's weaker model (a run's `guide/`, loaded by `from_pretrained`); None: none
        self.guide: torch.nn.Module | None = None
        # (σ_lo, σ_hi): guidance only at those noise levels (`Denoiser`); None: at every level
        self.guidance_interval: tuple[float, float] | None = None

    @classmethod
    def from_pretrained(
        cls, run_dir: str | Path, device: str = "auto", weights: str = "auto"
    ) -> LatentDiffusionPipeline:
        """Load `run_dir/autoencoder`, the run's backbone folder (`unet/` or `dit/`; EMA weights when
        present), `scheduler.json` and, when the run has one, the autoguidance guide `guide/`. A backbone
        trained on another autoencoder than the run's is refused
        (`io.autoencoder_record`; a run saved before backbones recorded it loads with a warning)."""
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise CheckpointError(f"run folder not found: {run_dir}")
        if not (run_dir / "autoencoder" / "config.json").is_file():
            raise CheckpointError(
                f"{run_dir} has no trained autoencoder ({run_dir / 'autoencoder'} missing): "
                f"train it with `latentdiff train-autoencoder --out {run_dir}`"
            )
        folder = find_backbone_folder(run_dir)
        if folder is None:
            raise CheckpointError(
                f"{run_dir} has no trained diffusion backbone (unet/ or dit/ missing): "
                f"train it with `latentdiff train-diffusion --out {run_dir}`"
            )
        ae_folder = run_dir / "autoencoder"
        autoencoder = Autoencoder.from_pretrained(ae_folder, weights=weights)
        # the backbone records the autoencoder it was trained on (as Stage 2 loaded it: weights "auto")
        trained_with = autoencoder if weights == "auto" else Autoencoder.from_pretrained(ae_folder)
        remedy = (
            f"Put that autoencoder back, or train the {folder.name} again on this one: "
            f"`latentdiff train-diffusion --out {run_dir} --overwrite`"
        )
        check_autoencoder_pair(folder, ae_folder, trained_with.hash(), remedy)
        backbone = load_backbone(folder, weights=weights)
        if is_text_run(run_dir):
            backbone = load_text_conditioned(run_dir, backbone, weights=weights)
        scheduler = upgrade_diffusion_dict(read_json(run_dir / "scheduler.json"))
        diffusion = from_dict(DiffusionConfig, scheduler, "scheduler.json: ")
        classes = read_json(run_dir / "classes.json") if (run_dir / "classes.json").is_file() else []
        pipe = cls(autoencoder, backbone, diffusion, classes, device)
        guide = run_dir / GUIDE_FOLDER
        if (guide / "config.json").is_file() and not is_text_run(run_dir):
            check_autoencoder_pair(guide, ae_folder, trained_with.hash(), remedy)
            pipe.guide = load_backbone(guide, weights=weights).to(pipe.device).eval().requires_grad_(False)
        return pipe

    # ------------------------------------------------------------------------------------- helpers
    @property
    def latent_shape(self) -> tuple[int, int, int]:
        c = self.backbone.config
        return c.in_channels, c.sample_size, c.sample_size

    @property
    def image_size(self) -> int:
        """The side in pixels of the images the backbone was trained on (its latent grid, decoded)."""
        return self.backbone.config.sample_size * self.autoencoder.downsample_factor

    @property
    def size_multiple(self) -> int:
        """Image sides `height`/`width` may take: multiples of this many pixels (the autoencoder's factor
        times the backbone's own multiple of latent cells)."""
        return self.autoencoder.downsample_factor * self.backbone.config.size_multiple

    def latent_size(self, height: int | None = None, width: int | None = None) -> tuple[int, int]:
        """The latent grid (h, w) of `height`×`width`-pixel images (each default: the trained size).
        Both backbones take other sizes than the trained one (the U-Net is convolutional, the DiT spreads
        its positions); a size that is not a positive multiple of `size_multiple` is refused."""
        f, sizes = self.autoencoder.downsample_factor, {"height": height, "width": width}
        for name, value in sizes.items():
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a whole number of pixels >= 1, got {value!r}")
            if value % self.size_multiple:
                raise ValueError(
                    f"{name}={value} px: this run makes images whose sides are multiples of "
                    f"{self.size_multiple} px (trained at {self.image_size} px)"
                )
        side = self.backbone.config.sample_size
        return (side if height is None else height // f), (side if width is None else width // f)

    @property
    def backbone_name(self) -> str:
        """The registry name of the backbone (`unet`, `dit`), as stored in its config.json."""
        return self.backbone.config_dict()["backbone"]

    @property
    def num_classes(self) -> int:
        return self.backbone.config.num_classes

    @property
    def takes_text(self) -> bool:
        """Whether this model is text-conditioned (takes `prompt=`)."""
        return "text" in getattr(self.backbone, "cond_keys", ())

    def _prompts(self, prompt: Prompts, n: int, name: str = "prompt") -> torch.Tensor | None:
        if prompt is None:
            return None
        if not self.takes_text:
            raise ValueError(f"this model is not text-conditioned: it takes no {name} (train it on captions)")
        prompts = [prompt] * n if isinstance(prompt, str) else list(prompt)
        if len(prompts) != n:
            raise ValueError(f"got {len(prompts)} {name}s for {n} images")
        return self.backbone.encode_prompts(prompts).to(self.device)

    def class_index(self, label: int | str) -> int:
        """A class by index or (case-insensitive) name; errors list the valid names."""
        if self.num_classes == 0:
            raise ValueError("this model is unconditional: it takes no class labels")
        if isinstance(label, str) and not label.lstrip("-").isdigit():
            lowered = [n.lower() for n in self.class_names]
            if label.lower() in lowered:
                return lowered.index(label.lower())
            shown = ", ".join(self.class_names[:40]) + (" ..." if len(self.class_names) > 40 else "")
            raise ValueError(f"unknown class {label!r}; valid classes: {shown}")
        idx = int(label)
        if not 0 <= idx < self.num_classes:
            raise ValueError(f"class index {idx} out of range 0..{self.num_classes - 1}")
        return idx

    def _labels(self, class_labels: Labels, n: int) -> torch.Tensor | None:
        if class_labels is None:
            return None
        if isinstance(class_labels, int | str):
            class_labels = [class_labels] * n
        labels = [self.class_index(int(v) if isinstance(v, torch.Tensor) else v) for v in class_labels]
        if len(labels) != n:
            raise ValueError(f"got {len(labels)} class labels for {n} images")
        return torch.tensor(labels, dtype=torch.long, device=self.device)

    def noise(
        self,
        n: int,
        generator: torch.Generator,
        device: str | torch.device | None = None,
        size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Initial latents drawn on the generator's device, moved to `device` (default: the pipeline's). A CPU
        generator (what `seed=` makes) gives the same latents, hence the same images, on every device; a
        CUDA generator draws on the GPU, as in diffusers. `size`: the latent grid (default: the trained one,
        see `latent_size`)."""
        shape = self.latent_shape if size is None else (self.latent_shape[0], *size)
        z = torch.randn((n, *shape), generator=generator, device=generator.device)
        return z.to(self.device if device is None else device)

    def _generator(self, seed: int | None, generator: torch.Generator | None) -> torch.Generator:
        if generator is not None:
            return generator
        g = torch.Generator()
        if seed is None:
            g.seed()  # a fresh random seed for this generator only: the caller's global RNG is untouched
        else:
            g.manual_seed(seed)
        return g

    def conditions(
        self,
        class_labels: Labels,
        negative_class_labels: Labels,
        n: int,
        prompt: Prompts = None,
        negative_prompt: Prompts = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        """(cond, uncond) for `n` images: ``{"class": labels}`` and/or ``{"text": token ids}`` (or ``{}`` for
        unconditional sampling) and what guidance contrasts it with — the negative classes / the negative
        prompt when given, else the learned null (the null class, the empty prompt)."""
        labels = self._labels(class_labels, n)
        negative = self._labels(negative_class_labels, n)
        if negative is not None and labels is None:
            raise ValueError("negative_class_labels need class_labels to contrast with")
        ids = self._prompts(prompt, n)
        negative_ids = self._prompts(negative_prompt, n, "negative prompt")
        if negative_ids is not None and ids is None:
            # a negative prompt alone steers away from it, towards the unconditional model
            ids = self.backbone.null_cond({"text": negative_ids})["text"]
        cond: dict[str, torch.Tensor] = {}
        if labels is not None:
            cond["class"] = labels
        if ids is not None:
            cond["text"] = ids
        if not cond:
            return {}, None
        uncond = self.backbone.null_cond(cond)
        if negative is not None:
            uncond["class"] = negative
        if negative_ids is not None:
            uncond["text"] = negative_ids
        return cond, uncond

    @staticmethod
    def _rows(
        conds: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None], sl: slice
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        cond, uncond = conds
        pick = lambda c: {k: v[sl] for k, v in c.items()}  # noqa: E731
        return pick(cond), None if uncond is None else pick(uncond)

    def _denoise(
        self,
        x_T: torch.Tensor,
        steps: int,
        sampler: str,
        guidance_scale: float,
        conds: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None],
        generator: torch.Generator,
        callback=None,
        model: torch.nn.Module | None = None,
        guidance: str = "cfg",
        **opts: Any,
    ) -> torch.Tensor:
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        guidance_scale = check_guidance_scale(guidance_scale, negative="negative_class_labels")
        cond, uncond = conds
        if guidance not in ("cfg", "auto"):
            raise ValueError(
                f"guidance must be 'cfg' (classifier-free) or 'auto' (autoguidance), got {guidance!r}"
            )
        if guidance == "auto" and self.guide is None:
            raise ValueError(
                "guidance='auto' needs a guide model: a run trained with one has `guide/`, which "
                "`from_pretrained` loads"
            )
        if guidance == "cfg" and guidance_scale != 1.0 and not cond:
            raise ValueError(
                "guidance_scale != 1 needs class_labels or a prompt (classifier-free guidance is "
                "conditional); an unconditional model is guided with guidance='auto' when its run has a "
                "guide model"
            )
        model = self.backbone if model is None else model
        guide = self.guide if guidance == "auto" else None
        denoiser = Denoiser(
            model, self.schedule, self.precond, cond, uncond, guidance_scale, guide=guide,
            guidance_interval=self.guidance_interval,
        )  # fmt: skip
        return get_sampler(sampler)(
            denoiser, x_T, self.schedule, steps, generator=generator, callback=callback, **opts
        )

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(self.autoencoder.from_latent(z)).clamp(-1, 1)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] → diffusion-space latents (posterior mode, shifted and scaled)."""
        return self.autoencoder.to_latent(self.autoencoder.encode(images.to(self.device)).mode())

    @staticmethod
    def _output(images: torch.Tensor, output_type: OutputType) -> Any:
        if output_type == "pt":
            return images.cpu()
        if output_type == "np":
            return to_uint8(images)
        if output_type == "pil":
            return [to_pil(img) for img in images]
        raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")

    # ----------------------------------------------------------------------------------- generation
    @torch.no_grad()
    def __call__(
        self,
        num_images: int = 8,
        steps: int = 20,
        sampler: str = "dpmpp_2m",
        guidance_scale: float = 1.0,
        class_labels: Labels = None,
        negative_class_labels: Labels = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        output_type: OutputType = "pil",
        batch_size: int = 64,
        prompt: Prompts = None,
        negative_prompt: Prompts = None,
        height: int | None = None,
        width: int | None = None,
        guidance: str = "cfg",
        **sampler_opts: Any,
    ) -> Any:
        """Sample `num_images` images, `height`×`width` pixels (default: the trained size; see
        `latent_size`). The initial noise of image i does not depend on `batch_size`. `guidance` says what
        `guidance_scale` contrasts the model with: "cfg" its unconditional (or negative) self, "auto" the
        run's guide model under the same conditioning (autoguidance; needs the run's `guide/`)."""
        images = list(
            self.generate_batches(
                num_images, steps, sampler, guidance_scale, class_labels, negative_class_labels, seed,
                generator, batch_size, prompt=prompt, negative_prompt=negative_prompt, height=height,
                width=width, guidance=guidance, **sampler_opts,
            )
        )  # fmt: skip
        return self._output(torch.cat(images), output_type)

    @torch.no_grad()
    def generate_batches(
        self,
        num_images: int = 8,
        steps: int = 20,
        sampler: str = "dpmpp_2m",
        guidance_scale: float = 1.0,
        class_labels: Labels = None,
        negative_class_labels: Labels = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        batch_size: int = 64,
        prompt: Prompts = None,
        negative_prompt: Prompts = None,
        height: int | None = None,
        width: int | None = None,
        guidance: str = "cfg",
        **sampler_opts: Any,
    ) -> Iterator[torch.Tensor]:
        """What `__call__` makes, one batch of `batch_size` images (float NCHW in [-1, 1], on the CPU) at a
        time as each is decoded, so that a caller can keep what was made before an interruption. Every
        argument is checked before the first batch is sampled."""
        if num_images < 1:
            raise ValueError(f"num_images must be at least 1, got {num_images}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number of images >= 1, got {batch_size!r}")
        size = self.latent_size(height, width)
        g = self._generator(seed, generator)
        conds = self.conditions(class_labels, negative_class_labels, num_images, prompt, negative_prompt)
        x_T = self.noise(num_images, g, device="cpu", size=size)  # on the CPU: a batch at a time goes over
        batches = range(0, num_images, batch_size)
        for i in tqdm(batches, desc="sampling", unit="batch", disable=not self.progress or len(batches) < 2):
            sl = slice(i, i + batch_size)
            z0 = self._denoise(
                x_T[sl].to(self.device),
                steps,
                sampler,
                guidance_scale,
                self._rows(conds, sl),
                g,
                guidance=guidance,
                **sampler_opts,
            )
            yield self.decode(z0).cpu()

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, output_type: OutputType = "pt") -> Any:
        """D(E(x)) through the frozen autoencoder (posterior mode)."""
        return self._output(self.decode(self.encode(images)), output_type)
