"""Stage 2 training: a tiny U-Net learns one batch of latents (the loss falls to almost nothing), and a
model trained on a single latent samples that latent back from pure noise."""

from __future__ import annotations

import torch

from latentdiff.diffusion.config import DiffusionConfig
from latentdiff.diffusion.guidance import Denoiser
from latentdiff.diffusion.samplers import get_sampler
from latentdiff.diffusion.schedule import make_schedule
from latentdiff.diffusion.targets import training_target
from latentdiff.diffusion.weighting import diffusion_loss, loss_weight
from latentdiff.nets.unet import UNet, UNetConfig


def tiny_unet() -> UNet:
    torch.manual_seed(0)
    return UNet(
        UNetConfig(
            in_channels=4,
            out_channels=4,
            sample_size=4,
            base_channels=32,
            channel_mult=(1, 2),
            num_res_blocks=1,
            attention_levels=(),
            mid_attention=False,
            groups=8,
        )
    )


def test_tiny_unet_overfits_one_batch_of_latents():
    g = torch.Generator().manual_seed(0)
    schedule = make_schedule(DiffusionConfig())
    z0 = torch.randn(8, 4, 4, 4, generator=g)
    t = torch.randint(0, 1000, (8,), generator=g)
    noise = torch.randn(z0.shape, generator=g)
    z_t = schedule.add_noise(z0, noise, t)
    target = training_target("eps", z0, noise, schedule, t)
    weights = loss_weight(schedule, t, "eps", "min_snr", 5.0)
    unet = tiny_unet()
    opt = torch.optim.AdamW(unet.parameters(), lr=3e-3)
    losses = []
    for _ in range(300):
        loss = diffusion_loss(unet(z_t, t), target, weights)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.02 * losses[0], (losses[0], losses[-1])


def test_model_trained_on_one_latent_samples_it_back():
    """Training on a single z* with fresh noise and timesteps each step makes the learned reverse process
    end at z* from any starting noise: the training objective, the schedule and the sampler agree."""
    g = torch.Generator().manual_seed(1)
    schedule = make_schedule(DiffusionConfig(prediction="v"))
    z_star = torch.sign(torch.randn(1, 4, 4, 4, generator=g))
    unet = tiny_unet()
    opt = torch.optim.AdamW(unet.parameters(), lr=2e-3)
    for _ in range(400):
        t = torch.randint(0, 1000, (32,), generator=g)
        noise = torch.randn(32, 4, 4, 4, generator=g)
        z0 = z_star.expand(32, -1, -1, -1)
        loss = diffusion_loss(
            unet(schedule.add_noise(z0, noise, t), t), training_target("v", z0, noise, schedule, t)
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    unet.eval()
    x_T = torch.randn(4, 4, 4, 4, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        for name in ("ddim", "dpmpp_2m"):
            out = get_sampler(name)(Denoiser(unet, schedule, "v"), x_T, schedule, 20)
            err = (out - z_star).abs().mean()
            assert err < 0.15, (name, float(err))
