"""Stage 1 as a training task: reconstruction + KL/VQ (+ PatchGAN) over the images of a dataset.

Phases of one optimiser step: "model" (the autoencoder's objective, with the discriminator frozen) and,
from `disc_start` on, "discriminator" (hinge loss on real images and the reconstructions of that same
step, detached) — the alternating scheme of Esser et al. 2021.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from latentdiff.autoencoder.losses import (
    AutoencoderLossConfig,
    disc_active,
    discriminator_loss,
    generator_loss,
    make_discriminator,
)
from latentdiff.autoencoder.model import Autoencoder
from latentdiff.data.dataset import ImageDataset
from latentdiff.evaluation import evaluate_autoencoder
from latentdiff.io.checkpoint import save_model_folder
from latentdiff.training.batching import BatchRandom
from latentdiff.training.task import OptimizerSpec, StepOutput


def reconstruction_panel(x: torch.Tensor, x_rec: torch.Tensor) -> torch.Tensor:
    """Rows of inputs | reconstructions | absolute error (×2, so small errors show), as one image batch."""
    err = ((x_rec - x).abs() * 2 - 1).clamp(-1, 1)
    return torch.cat([x, x_rec.clamp(-1, 1), err])


class AutoencoderTask:
    name = "autoencoder"
    grid_nrow = 8

    def __init__(
        self, model: Autoencoder, loss: AutoencoderLossConfig, data: ImageDataset, eval_data: ImageDataset
    ) -> None:
        self.model, self.loss_cfg, self.data, self.eval_data = model, loss, data, eval_data
        self.discriminator = None
        if loss.disc_weight > 0:
            self.discriminator = make_discriminator(loss, data.channels, data.resolution)

    def extra_modules(self) -> dict[str, tuple[nn.Module, OptimizerSpec]]:
        if self.discriminator is None:
            return {}
        return {"discriminator": (self.discriminator, OptimizerSpec(betas=(0.5, 0.9)))}

    def num_items(self) -> int:
        return len(self.data)

    def get_batch(self, indices: torch.Tensor, device: torch.device) -> torch.Tensor:
        images, _ = self.data.get_batch(indices)
        return images.to(device, non_blocking=True)

    def phases(self, step: int) -> list[str]:
        if self.discriminator is not None and disc_active(self.loss_cfg, step):
            return ["model", "discriminator"]
        return ["model"]

    def phase_loss(
        self,
        phase: str,
        modules: dict[str, nn.Module],
        batch: torch.Tensor,
        ctx: dict[str, Any],
        rng: BatchRandom,
        step: int,
    ) -> StepOutput:
        if phase == "model":
            disc = self.discriminator
            if disc is not None:
                disc.requires_grad_(False)  # the generator's GAN term must not train the discriminator
            # ε of the posterior sample drawn per sample of the global batch: the same numbers whichever
            # rank and micro-batch a sample lands on
            f, (h, w) = self.model.downsample_factor, batch.shape[-2:]
            noise = rng.randn(self.model.latent_channels, h // f, w // f) if self.model.kind == "kl" else None
            out = modules["model"](batch, noise=noise)
            loss, logs = generator_loss(
                self.loss_cfg,
                batch,
                out,
                step,
                discriminator=disc,
                last_layer=self.model.last_decoder_layer() if disc else None,
            )
            if disc is not None:
                disc.requires_grad_(True)
            ctx["reconstruction"] = out.reconstruction.detach()
            logs.update({k: v for k, v in out.logs.items() if isinstance(v, int | float)})
            return StepOutput(loss, logs)
        loss, logs = discriminator_loss(
            self.loss_cfg, modules["discriminator"], batch, ctx["reconstruction"], step
        )
        return StepOutput(loss, logs)

    def save_model(
        self, path: Path, model_state: dict[str, torch.Tensor], ema_state: dict[str, torch.Tensor] | None
    ) -> None:
        save_model_folder(path, self.model.config_dict(), model_state, ema_state)

    def samples(self, model: nn.Module, step: int) -> torch.Tensor | None:
        x = self.eval_data.get_batch(range(min(8, len(self.eval_data))))[0].to(model.device)
        with torch.no_grad():
            x_rec = model.decode(model.encode(x).mode())
        return reconstruction_panel(x, x_rec).cpu()

    def evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        metrics = evaluate_autoencoder(model, self.eval_data, progress=False)
        keep = ("psnr", "ssim", "codebook_usage", "perplexity")
        return {k: float(metrics[k]) for k in keep if k in metrics}
