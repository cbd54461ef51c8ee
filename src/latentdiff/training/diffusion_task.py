"""Stage 2 as a training task: the DDPM objective on latents of the frozen autoencoder (Ho et al. 2020,
Algorithm 1, in latent space as in Rombach et al. 2022, eq. 2).

Each step draws a fresh posterior sample z0 = mean + std·ε from the latent cache (KL; EDM2's practice),
or looks the code vectors up (VQ), applies the autoencoder's shift and scale, noises it with the
closed-form q(z_t | z0) and regresses the chosen target (eps / v / x0) with uniform or min-SNR weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from latentdiff.autoencoder.model import Autoencoder
from latentdiff.data.latent_cache import LatentCache
from latentdiff.diffusion.config import DiffusionConfig
from latentdiff.diffusion.schedule import NoiseSchedule
from latentdiff.diffusion.targets import training_target
from latentdiff.diffusion.weighting import diffusion_loss, loss_weight
from latentdiff.io.checkpoint import save_model_folder
from latentdiff.nets.unet import UNet
from latentdiff.training.batching import BatchRandom
from latentdiff.training.task import OptimizerSpec, StepOutput


class DiffusionTask:
    name = "unet"

    def __init__(
        self,
        unet: UNet,
        autoencoder: Autoencoder,
        cache: LatentCache,
        schedule: NoiseSchedule,
        diffusion: DiffusionConfig,
        label_dropout: float = 0.1,
        sampler: str = "dpmpp_2m",
        sample_steps: int = 20,
        guidance_scale: float = 2.0,
    ) -> None:
        self.model, self.autoencoder, self.cache = unet, autoencoder.eval().requires_grad_(False), cache
        self.schedule, self.diffusion = schedule, diffusion
        self.label_dropout = label_dropout
        self.conditional = unet.config.num_classes > 0
        self.sampler, self.sample_steps, self.guidance_scale = sampler, sample_steps, guidance_scale
        self.grid_nrow = 8

    def extra_modules(self) -> dict[str, tuple[nn.Module, OptimizerSpec]]:
        return {}

    def num_items(self) -> int:
        return len(self.cache)

    def get_batch(self, indices: torch.Tensor, device: torch.device) -> tuple:
        first, std, labels = self.cache.get_batch(indices)
        return first.to(device), None if std is None else std.to(device), labels.to(device)

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
        labels = batch[2]
        t = rng.randint(0, self.schedule.num_timesteps)
        noise = rng.randn(*z0.shape[1:])
        z_t = self.schedule.add_noise(z0, noise, t)
        class_labels = None
        if self.conditional:
            drop = rng.rand() < self.label_dropout
            class_labels = torch.where(drop, torch.full_like(labels, self.model.null_class), labels)
        out = modules["model"](z_t, t, class_labels)
        target = training_target(self.diffusion.prediction, z0, noise, self.schedule, t)
        weights = loss_weight(
            self.schedule,
            t,
            self.diffusion.prediction,
            self.diffusion.loss_weighting,
            self.diffusion.min_snr_gamma,
        )
        loss = diffusion_loss(out.float(), target, weights)
        return StepOutput(loss, {})

    def save_model(
        self, path: Path, model_state: dict[str, torch.Tensor], ema_state: dict[str, torch.Tensor] | None
    ) -> None:
        save_model_folder(path, self.model.config_dict(), model_state, ema_state)

    @torch.no_grad()
    def samples(self, model: nn.Module, step: int) -> torch.Tensor | None:
        """8 samples per class (up to 10 classes), or 64 unconditional ones, decoded to images."""
        from latentdiff.pipeline import LatentDiffusionPipeline

        pipe = LatentDiffusionPipeline(
            self.autoencoder, model, self.diffusion, device=next(model.parameters()).device
        )
        pipe.progress = False
        labels = None
        if self.conditional:
            labels = (
                torch.arange(min(10, model.config.num_classes)).repeat_interleave(self.grid_nrow).tolist()
            )
        return pipe(
            num_images=len(labels) if labels else 64,
            steps=self.sample_steps,
            sampler=self.sampler,
            guidance_scale=self.guidance_scale if labels else 1.0,
            class_labels=labels,
            seed=0,
            output_type="pt",
        )

    def evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        return {}
