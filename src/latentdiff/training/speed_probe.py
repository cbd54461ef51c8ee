"""Measuring this machine for the planner: training images/s of each size preset in each stage (a few timed
bf16-autocast steps after warm-up, the least disturbed timing kept) and Inception-v3's seconds per image
for the evaluation's FID."""

from __future__ import annotations

import dataclasses
import time

import torch

from latentdiff.training.data_summary import DataSummary
from latentdiff.training.presets import PRESET_NAMES, autoencoder_config, choose_f, unet_config
from latentdiff.training.stages import TextConfig


def _timed_steps(step, warmup: int = 2, steps: int = 3) -> float:
    """Seconds per call of `step` after `warmup` calls (the least disturbed of `steps` timings). One warm-up
    call was too few: the first preset probed in a process (the `tiny` autoencoder) read 162-222 images/s
    in `make demo` runs against 331 when probed again in a warm process, and trained at ~270."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def _training_rate(model: torch.nn.Module, loss_fn, batch: int, device: torch.device) -> float:
    """Images per second of one bf16-autocast training step (`loss_fn()`, backward, fused AdamW)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return batch / _timed_steps(step)


def probe_autoencoder(preset: str, channels: int, resolution: int, batch: int, device: torch.device) -> float:
    """Images per second of one Stage 1 training step (forward, KL + L2 loss, backward, AdamW) in bf16."""
    from latentdiff.autoencoder.model import Autoencoder

    torch.manual_seed(0)
    model = Autoencoder(autoencoder_config(preset, channels, resolution)).to(device).train()
    x = torch.rand(batch, channels, resolution, resolution, device=device) * 2 - 1

    def loss():
        post = model.encode(x)
        return (model.decode(post.sample()).float() - x).pow(2).mean() + 1e-6 * post.kl().mean()

    return _training_rate(model, loss, batch, device)


def probe_unet(
    preset: str, latent_side: int, classes: int, batch: int, device: torch.device, text: bool = False
) -> float:
    """Images per second of one Stage 2 training step (forward, MSE, backward, AdamW) in bf16; with `text`,
    of the cross-attention U-Net reading a full-length prompt of the default text encoder's width (its
    transformer blocks make a step slower: the emoji text demo trained at 139 images/s where the class
    U-Net's probe had measured 213)."""
    from latentdiff.nets import conditioning
    from latentdiff.nets.unet import UNet

    torch.manual_seed(0)
    words = TextConfig()
    cfg = dataclasses.replace(
        unet_config(preset, latent_side),
        in_channels=4,
        out_channels=4,
        sample_size=latent_side,
        num_classes=0 if text else classes,
        cross_attention_dim=words.width if text else None,
    )
    model = UNet(cfg).to(device).train()
    z = torch.randn(batch, 4, latent_side, latent_side, device=device)
    t = torch.rand(batch, device=device) * 999
    cond = None
    if text:
        cond = {
            conditioning.TEXT_EMBEDDINGS: torch.randn(batch, words.max_length, words.width, device=device),
            conditioning.TEXT_MASK: torch.ones(batch, words.max_length, dtype=torch.bool, device=device),
        }
    elif classes:
        cond = {"class": torch.arange(batch, device=device) % classes}
    return _training_rate(model, lambda: (model(z, t, cond).float() - z).pow(2).mean(), batch, device)


def probe_inception(device: torch.device) -> float | None:
    """Seconds per image of the evaluation's Inception-v3 features on this machine (its FID costs 3 passes
    of `SAMPLES_FOR_EVAL` images: ~3 minutes on 2 CPU cores, which the plan must keep back); None when the
    weights are not installed (no FID is then measured)."""
    from latentdiff.metrics.inception import InceptionFeatures, InceptionWeightsError

    try:
        extractor = InceptionFeatures(device)
    except InceptionWeightsError:
        return None
    x = torch.zeros(extractor.batch_size, 3, 32, 32, device=device)
    return _timed_steps(lambda: extractor(x)) / extractor.batch_size


def probe_speeds(
    summary: DataSummary,
    device: torch.device,
    presets: tuple[str, ...] = PRESET_NAMES,
    stop_below: float = 0.0,
) -> dict[str, dict[str, float]]:
    """Measured training images/s per preset and stage, smallest first; a stage stops probing once a preset
    is slower than `stop_below` images/s (the larger ones can only be slower)."""
    f = choose_f(summary.resolution)
    side = summary.resolution // f
    speeds: dict[str, dict[str, float]] = {"autoencoder": {}, "diffusion": {}}
    for preset in presets:
        rate = probe_autoencoder(preset, summary.channels, summary.resolution, 32, device)
        speeds["autoencoder"][preset] = rate
        if rate < stop_below:
            break
    for preset in presets:
        batch = 128 if side <= 8 else 64
        rate = probe_unet(preset, side, summary.num_classes, batch, device, text=summary.captioned)
        speeds["diffusion"][preset] = rate
        if rate < stop_below:
            break
    return speeds
