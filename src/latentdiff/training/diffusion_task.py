"""Stage 2 as a training task: denoising score matching on latents of the frozen autoencoder (Ho et al.
2020, Algorithm 1; Karras et al. 2022, eq. 2 and Table 1; in latent space as in Rombach et al. 2022, eq. 2).

Each step draws a fresh posterior sample z0 = mean + std·ε from the latent cache (KL; EDM2's practice),
or looks the code vectors up (VQ), applies the autoencoder's shift and scale, draws noise levels
(`diffusion.noise_levels`), noises z0 to x_t = α z0 + s ε, replaces each conditioning key by its null with
that key's dropout rate (classifier-free guidance), and regresses the preconditioned network's target F*
with the configured loss weights. The backbone is any of `nets.backbones`, or one joined to a text encoder
(`text.conditioned.TextConditioned`, trained with it): then each row's caption is drawn at random among its
image's captions every step, and "dropout" gives the empty caption.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latentdiff.autoencoder.model import Autoencoder
from latentdiff.data.latent_cache import TEXT, TEXT_COUNT, LatentCache
from latentdiff.diffusion.config import DiffusionConfig
from latentdiff.diffusion.noise_levels import sample_noise_levels
from latentdiff.diffusion.preconditioning import Preconditioning, per_sample
from latentdiff.diffusion.schedule import NoiseSchedule
from latentdiff.diffusion.weighting import diffusion_loss, loss_weight
from latentdiff.io.autoencoder_record import RECORD_FILE, autoencoder_record
from latentdiff.io.checkpoint import load_tensors, save_model_folder
from latentdiff.nets.conditioning import drop_condition
from latentdiff.text.conditioned import ENCODER_FOLDER, TextConditioned, merge_state
from latentdiff.training.batching import BatchRandom
from latentdiff.training.task import OptimizerSpec, StepOutput


class DiffusionTask:
    def __init__(
        self,
        backbone: nn.Module,
        autoencoder: Autoencoder,
        cache: LatentCache,
        schedule: NoiseSchedule,
        diffusion: DiffusionConfig,
        cond_dropout: Mapping[str, float],
        sampler: str = "dpmpp_2m",
        sample_steps: int = 20,
        guidance_scale: float = 2.0,
        name: str = "unet",
        autoencoder_hash: str | None = None,
    ) -> None:
        missing = [k for k in backbone.cond_keys if k not in cond_dropout]
        if missing:
            raise ValueError(f"cond_dropout has no rate for the conditioning {missing} this backbone takes")
        self.name = name
        self.model, self.autoencoder, self.cache = backbone, autoencoder.eval().requires_grad_(False), cache
        self.schedule, self.diffusion = schedule, diffusion
        self.precond = Preconditioning(diffusion.prediction, diffusion.sigma_data)
        self.cond_keys: tuple[str, ...] = tuple(sorted(backbone.cond_keys))
        self.cond_dropout = {k: float(cond_dropout[k]) for k in self.cond_keys}
        self.sampler, self.sample_steps, self.guidance_scale = sampler, sample_steps, guidance_scale
        self.grid_nrow = 8
        # saved with every copy of the backbone: whose latents it learned (io.autoencoder_record)
        self.autoencoder_hash = autoencoder_hash

    def extra_modules(self) -> dict[str, tuple[nn.Module, OptimizerSpec]]:
        return {}

    def num_items(self) -> int:
        return len(self.cache)

    def get_batch(self, indices: torch.Tensor, device: torch.device) -> tuple:
        first, std, cond = self.cache.get_batch(indices)
        missing = [k for k in self.cond_keys if k not in cond]
        if missing:
            raise ValueError(f"the latent cache {self.cache.path} holds no {missing} conditioning")
        keep = (*self.cond_keys, TEXT_COUNT) if TEXT in self.cond_keys else self.cond_keys
        cond = {k: cond[k].to(device) for k in keep}
        return first.to(device), None if std is None else std.to(device), cond

    def phases(self, step: int) -> list[str]:
        return ["model"]

    def clean_latents(self, batch: tuple, rng: BatchRandom) -> torch.Tensor:
        """z0 in the diffusion's (shifted, scaled) coordinates, with a fresh posterior sample."""
        first, std, _ = batch
        if self.cache.kind == "vq":
            z = self.autoencoder.indices_to_latent(first)
        else:
            z = first if std is None else first + std * rng.randn(*first.shape[1:])
        return self.autoencoder.to_latent(z)

    def drawn_captions(self, cond: dict[str, torch.Tensor], rng: BatchRandom) -> dict[str, torch.Tensor]:
        """One caption per row, uniformly among its image's captions (one uniform draw per row); a row
        without captions gets the empty caption (the model's null)."""
        if TEXT_COUNT not in cond:
            return cond
        cond = dict(cond)
        choices, counts = cond.pop(TEXT), cond.pop(TEXT_COUNT)
        u = rng.rand().to(counts.device)
        pick = torch.minimum((u * counts).long(), (counts - 1).clamp(min=0))
        ids = choices[torch.arange(len(choices), device=choices.device), pick]
        null = self.model.null_cond({TEXT: ids})[TEXT]
        cond[TEXT] = torch.where((counts > 0)[:, None], ids, null)
        return cond

    def dropped_condition(self, cond: dict[str, torch.Tensor], rng: BatchRandom) -> dict[str, torch.Tensor]:
        """Each key replaced by its null value in a fraction `cond_dropout[key]` of the rows, drawn
        independently per key (one uniform draw per key, keys in sorted order)."""
        if not cond:
            return cond
        drop = {k: rng.rand() < self.cond_dropout[k] for k in self.cond_keys}
        return drop_condition(cond, self.model.null_cond(cond), drop)

    def phase_loss(
        self,
        phase: str,
        modules: dict[str, nn.Module],
        batch: tuple,
        ctx: dict[str, Any],
        rng: BatchRandom,
        step: int,
    ) -> StepOutput:
        z0 = self.clean_latents(batch, rng)
        levels = sample_noise_levels(self.diffusion, self.schedule, rng)
        noise = rng.randn(*z0.shape[1:])
        x_t = per_sample(levels.alpha, z0) * z0 + per_sample(levels.s, z0) * noise
        scale = self.precond.input_scale(levels)
        x_in = x_t if scale is None else x_t * per_sample(scale, x_t)
        cond = self.dropped_condition(self.drawn_captions(batch[2], rng), rng)
        c_noise = self.precond.c_noise(levels, self.schedule).to(z0.device)
        out = modules["model"](x_in, c_noise, cond)
        target = self.precond.target(z0, noise, levels)
        cfg = self.diffusion
        weights = loss_weight(cfg.loss_weighting, self.precond, levels, cfg.min_snr_gamma)
        loss = diffusion_loss(out.float(), target, weights)
        return StepOutput(loss, {})

    def save_model(
        self, path: Path, model_state: dict[str, torch.Tensor], ema_state: dict[str, torch.Tensor] | None
    ) -> None:
        """The backbone folder `path`; a text-conditioned model also writes `text_encoder/` beside it."""
        ae_hash = self.autoencoder_hash
        record = None if ae_hash is None else {RECORD_FILE: autoencoder_record(ae_hash)}

        def save_backbone(folder: Path, state: dict, ema: dict | None) -> None:
            save_model_folder(folder, self.model.config_dict(), state, ema, extra_json=record)

        if isinstance(self.model, TextConditioned):
            self.model.save_parts(path, model_state, ema_state, save_backbone)
        else:
            save_backbone(path, model_state, ema_state)

    def checkpoint_weights(
        self, model_folder: Path
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(model state, EMA state) of a checkpoint's `model/` folder as `save_model` wrote it."""

        def read(folder: Path, name: str) -> dict[str, torch.Tensor]:
            return load_tensors(folder / name)

        if not isinstance(self.model, TextConditioned):
            return read(model_folder, "model.safetensors"), read(model_folder, "ema.safetensors")
        encoder = model_folder.parent / ENCODER_FOLDER
        return tuple(
            merge_state(read(model_folder, name), read(encoder, name))
            for name in ("model.safetensors", "ema.safetensors")
        )

    @torch.no_grad()
    def samples(self, model: nn.Module, step: int) -> torch.Tensor | None:
        """8 samples per class (up to 10 classes), or 64 unconditional ones, decoded to images."""
        from latentdiff.pipeline import LatentDiffusionPipeline

        pipe = LatentDiffusionPipeline(
            self.autoencoder, model, self.diffusion, device=next(model.parameters()).device
        )
        pipe.progress = False
        labels = None
        if TEXT in self.cond_keys:
            return self._text_samples(pipe)
        if "class" in self.cond_keys:
            classes = torch.arange(min(10, model.config.num_classes))
            labels = classes.repeat_interleave(self.grid_nrow).tolist()
        return pipe(
            num_images=len(labels) if labels else 64,
            steps=self.sample_steps,
            sampler=self.sampler,
            guidance_scale=self.guidance_scale if labels else 1.0,
            class_labels=labels,
            seed=0,
            output_type="pt",
        )

    def _text_samples(self, pipe) -> torch.Tensor:
        """8 samples for each of up to 8 captions spread over the training data (first caption each)."""
        captions = self.cache.captions()
        rows = [c[0] for c in captions[:: max(1, len(captions) // 8)] if c][:8] or [""]
        return pipe(
            num_images=len(rows) * self.grid_nrow,
            prompt=[p for p in rows for _ in range(self.grid_nrow)],
            steps=self.sample_steps,
            sampler=self.sampler,
            guidance_scale=self.guidance_scale,
            seed=0,
            output_type="pt",
        )

    def evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        return {}
