"""Training objective of the Stage 1 autoencoder: reconstruction + the model's regulariser (KL or VQ) + an
adaptively weighted PatchGAN term (Esser et al. 2021, "Taming Transformers", sec. 3.1; Rombach et al.
2022, appendix G). There is no perceptual (LPIPS) term: its pretrained weights are not available offline.

Recommended use: keep `disc_start` after the reconstruction has converged (watch the validation PSNR
flatten). Before `disc_start` the GAN term is exactly zero and the discriminator is not even run; an
early discriminator is the usual reason reconstructions get worse when the GAN starts. The adaptive
weight (eq. 7) then scales the GAN gradient at the decoder's last layer to the size of the
reconstruction gradient there, so the adversarial term neither vanishes nor dominates.

The training step calls, per optimiser step,
    out = autoencoder(x)
    loss_g, logs_g = generator_loss(cfg, x, out, step, discriminator=D, last_layer=ae.last_decoder_layer())
    loss_d, logs_d = discriminator_loss(cfg, D, x, out.reconstruction, step)   # if disc_active(cfg, step)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from latentdiff.autoencoder.discriminator import DiscriminatorNorm, PatchDiscriminator
from latentdiff.autoencoder.model import AutoencoderOutput


@dataclass
class AutoencoderLossConfig:
    """Weights of the Stage 1 objective and the discriminator's shape. `disc_weight = 0` switches the GAN
    off entirely. The KL weight belongs to the model (`AutoencoderConfig.kl_weight`)."""

    recon_kind: Literal["l1", "l2"] = "l1"
    recon_weight: float = 1.0
    disc_weight: float = 0.5
    disc_start: int = 10_000
    adaptive_weight: bool = True
    adaptive_weight_max: float = 1e4
    disc_channels: int = 64
    disc_layers: int = 3
    disc_norm: DiscriminatorNorm = "batch"

    def __post_init__(self) -> None:
        for key in ("recon_weight", "disc_weight", "adaptive_weight_max"):
            if getattr(self, key) < 0:
                raise ValueError(f"autoencoder_loss.{key}={getattr(self, key)!r}: must be >= 0")
        if self.disc_start < 0:
            raise ValueError(f"autoencoder_loss.disc_start={self.disc_start}: must be >= 0")
        if self.disc_channels < 1 or self.disc_layers < 1:
            raise ValueError("autoencoder_loss.disc_channels and disc_layers must be at least 1")


def make_discriminator(
    config: AutoencoderLossConfig, in_channels: int, resolution: int
) -> PatchDiscriminator:
    """The PatchGAN for `in_channels`-channel images of side `resolution` (layers fitted to the size)."""
    return PatchDiscriminator(
        in_channels, config.disc_channels, config.disc_layers, resolution=resolution, norm=config.disc_norm
    )


def reconstruction_loss(x: torch.Tensor, x_rec: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Mean absolute ("l1") or mean squared ("l2") pixel error."""
    if x.shape != x_rec.shape:
        raise ValueError(f"reconstruction_loss: shapes differ, {tuple(x.shape)} vs {tuple(x_rec.shape)}")
    if kind == "l1":
        return F.l1_loss(x_rec, x)
    if kind == "l2":
        return F.mse_loss(x_rec, x)
    raise ValueError(f"reconstruction_loss: kind must be 'l1' or 'l2', got {kind!r}")


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss ½(E[relu(1 − D(x))] + E[relu(1 + D(x̂))]) (Lim & Ye 2017; Miyato et al. 2018;
    the VQGAN discriminator)."""
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator side of the hinge GAN: −E[D(x̂)] (Lim & Ye 2017; Miyato et al. 2018)."""
    return -fake_logits.mean()


def adaptive_weight(
    nll_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor, max: float = 1e4
) -> torch.Tensor:
    """λ = ‖∇_L nll‖ / (‖∇_L g‖ + 1e-4), clamped to [0, max], L the decoder's last layer (Esser et al. 2021,
    eq. 7). Returned detached; the graph is kept for the backward pass that follows."""
    nll_grad = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = nll_grad.float().norm() / (g_grad.float().norm() + 1e-4)
    return weight.clamp(0.0, max).detach()


def disc_active(config: AutoencoderLossConfig, step: int) -> bool:
    """Whether the GAN term is on at optimiser step `step` (and the discriminator needs training)."""
    return config.disc_weight > 0 and step >= config.disc_start


def generator_loss(
    config: AutoencoderLossConfig,
    x: torch.Tensor,
    output: AutoencoderOutput,
    step: int,
    *,
    discriminator: nn.Module | None = None,
    last_layer: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Autoencoder objective at step `step`:

        recon_weight·rec + aux (KL or VQ) + disc_weight·λ·(−E[D(x̂)])

    λ is `adaptive_weight` of the reconstruction part when `config.adaptive_weight` (needs `last_layer`
    and recorded gradients; without gradients, e.g. in validation, the GAN term gets λ = 0), else 1.
    The backward pass of this loss also reaches the discriminator's parameters: freeze them
    (requires_grad_(False)) for the autoencoder step or zero their gradients before the discriminator step.
    """
    x_rec = output.reconstruction
    rec = reconstruction_loss(x, x_rec, config.recon_kind)
    nll = config.recon_weight * rec
    logs: dict[str, float] = {"rec_loss": float(rec.detach())}
    total = nll + output.aux_loss
    logs["aux_loss"] = float(output.aux_loss.detach())
    if disc_active(config, step):
        if discriminator is None:
            raise ValueError(f"generator_loss: step {step} >= disc_start but no discriminator was given")
        g = hinge_g_loss(discriminator(x_rec))
        if not config.adaptive_weight:
            weight = torch.ones((), device=g.device)
        elif last_layer is None:
            raise ValueError(
                "generator_loss: adaptive_weight needs last_layer (autoencoder.last_decoder_layer())"
            )
        elif torch.is_grad_enabled() and nll.requires_grad and g.requires_grad:
            weight = adaptive_weight(nll, g, last_layer, config.adaptive_weight_max)
        else:
            weight = torch.zeros((), device=g.device)
        total = total + config.disc_weight * weight * g
        logs["g_loss"] = float(g.detach())
        logs["adaptive_weight"] = float(weight)
    logs["disc_active"] = float(disc_active(config, step))
    logs["loss"] = float(total.detach())
    return total, logs


def discriminator_loss(
    config: AutoencoderLossConfig, discriminator: nn.Module, x: torch.Tensor, x_rec: torch.Tensor, step: int
) -> tuple[torch.Tensor, dict[str, float]]:
    """Hinge loss of the discriminator on real `x` and detached reconstructions. Before `disc_start`
    (see `disc_active`) the discriminator is not run and the loss is a constant zero without gradient:
    skip its backward and optimiser step."""
    if not disc_active(config, step):
        return torch.zeros((), device=x.device), {"d_loss": 0.0}
    real = discriminator(x.detach())
    fake = discriminator(x_rec.detach())
    loss = hinge_d_loss(real, fake)
    logs = {
        "d_loss": float(loss.detach()),
        "logits_real": float(real.detach().float().mean()),
        "logits_fake": float(fake.detach().float().mean()),
    }
    return loss, logs
