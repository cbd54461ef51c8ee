"""A trained run exported to diffusers' formats runs in diffusers with the same numbers."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from suite_device import TEST_DEVICE, oracle_tolerance

from latentdiff.cli import main
from latentdiff.pipeline import LatentDiffusionPipeline

diffusers = pytest.importorskip("diffusers")


def test_exported_run_matches_in_diffusers(tiny_run, tmp_path, capsys, device):
    assert main(["-q", "export-diffusers", str(tiny_run), "--out", str(tmp_path / "exp")]) == 0
    capsys.readouterr()
    pipe = LatentDiffusionPipeline.from_pretrained(tiny_run, device=device)
    unet = diffusers.UNet2DModel.from_pretrained(tmp_path / "exp" / "unet").eval().to(device)
    vae = diffusers.AutoencoderKL.from_pretrained(tmp_path / "exp" / "vae").eval().to(device)
    scheduler = diffusers.DPMSolverMultistepScheduler.from_pretrained(tmp_path / "exp" / "scheduler")
    torch.testing.assert_close(
        scheduler.alphas_cumprod.double(), pipe.schedule.alphas_cumprod.cpu().double(), rtol=0, atol=1e-6
    )
    g = torch.Generator().manual_seed(0)  # drawn on the CPU: the same inputs on every device
    z = torch.randn(2, *pipe.latent_shape, generator=g).to(device)
    t = torch.tensor([10.0, 700.0]).to(device)
    labels = torch.tensor([3, pipe.num_classes]).to(device)
    tol = oracle_tolerance(device, atol=1e-5)
    with torch.no_grad():
        ours = pipe.backbone(z, t, {"class": labels})
        theirs = unet(z, t, class_labels=labels).sample
        torch.testing.assert_close(theirs, ours, **tol)
        images = (torch.rand(2, 1, 8, 8, generator=g) * 2 - 1).to(device)
        torch.testing.assert_close(
            vae.encode(images).latent_dist.mean, pipe.autoencoder.encode(images).mean, **tol
        )
        torch.testing.assert_close(vae.decode(z).sample, pipe.autoencoder.decode(z), **tol)
    meta = json.loads((tmp_path / "exp" / "latentdiff.json").read_text())
    assert meta["scale_factor"] == pipe.autoencoder.config.scale_factor and len(meta["class_names"]) == 10


def _per_channel(value: float | list[float]) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float32).view(1, -1, 1, 1)


def _diffusers_sample(folder, n: int, steps: int, seed: int, label: int, scale: float, device: torch.device):
    """What a diffusers user writes, given only the exported folder: the scheduler, U-Net and VAE as saved,
    the latent scale/shift and null class from latentdiff.json, initial noise from a CPU generator, and
    classifier-free guidance ε_u + s·(ε_c − ε_u), run on `device`. Returns (latent, image in [-1, 1]),
    on the CPU."""
    meta = json.loads((folder / "latentdiff.json").read_text())
    scheduler = diffusers.DPMSolverMultistepScheduler.from_pretrained(folder / "scheduler")
    unet = diffusers.UNet2DModel.from_pretrained(folder / "unet").eval().to(device)
    vae = diffusers.AutoencoderKL.from_pretrained(folder / "vae").eval().to(device)
    c, size = unet.config.in_channels, unet.config.sample_size
    latents = torch.randn((n, c, size, size), generator=torch.Generator().manual_seed(seed)).to(device)
    labels = torch.cat([torch.full((n,), label), torch.full((n,), meta["null_class"])]).to(device)
    scheduler.set_timesteps(steps, device=device)
    with torch.no_grad():
        for t in scheduler.timesteps:
            cond, uncond = unet(torch.cat([latents, latents]), t, class_labels=labels).sample.chunk(2)
            latents = scheduler.step(uncond + scale * (cond - uncond), t, latents).prev_sample
        shift = _per_channel(meta["shift_factor"]).to(device)
        z = latents / _per_channel(meta["scale_factor"]).to(device) + shift
        return latents.cpu(), vae.decode(z).sample.clamp(-1, 1).cpu()


@pytest.mark.parametrize(
    ("steps", "prediction", "schedule"),
    [(20, "eps", "linear"), (8, "v", "scaled_linear"), (6, "x0", "cosine")],
)
def test_exported_scheduler_reproduces_latentdiff_sample(
    tiny_run, tmp_path, capsys, device, steps, prediction, schedule
):
    # the default sampler (DPM-Solver++(2M)) of `latentdiff sample`, against diffusers' own scheduler loaded
    # from the export. Other predictions and schedules reinterpret the same network through the run's
    # scheduler.json: both sides read its output the same way, so they must still agree
    # (diffusers' DPMSolverMultistepScheduler is the oracle: steps, spacing, order, last step, betas)
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    config = json.loads((run / "scheduler.json").read_text())
    config.update(prediction=prediction, schedule=schedule)
    if schedule == "scaled_linear":  # with a zero terminal SNR (Lin et al. 2024), as v-prediction allows
        config.update(beta_start=0.00085, beta_end=0.012, zero_terminal_snr=prediction == "v")
    (run / "scheduler.json").write_text(json.dumps(config))
    n, seed, label, scale = 3, 11, 3, 2.5
    assert main(["-q", "export-diffusers", str(run), "--out", str(tmp_path / "exp")]) == 0
    exported = json.loads((tmp_path / "exp" / "scheduler" / "scheduler_config.json").read_text())
    assert exported["_class_name"] == "DPMSolverMultistepScheduler"
    ours_dir = tmp_path / "ours"
    flags = ["--num-images", str(n), "--steps", str(steps), "--class", str(label), "--guidance", str(scale)]
    flags += ["--seed", str(seed), "--device", TEST_DEVICE]
    assert main(["-q", "sample", str(run), *flags, "--out", str(ours_dir)]) == 0
    capsys.readouterr()

    latents, images = _diffusers_sample(tmp_path / "exp", n, steps, seed, label, scale, device)
    assert torch.isfinite(latents).all() and latents.abs().max() > 0.1

    # the saved PNGs of `latentdiff sample`: the same uint8 images, up to a rounding step
    pngs = np.stack([np.asarray(Image.open(ours_dir / f"sample_{i:04d}.png")) for i in range(n)])
    theirs_u8 = ((images + 1) * 127.5).round().to(torch.uint8).movedim(1, -1).squeeze(-1).numpy()
    assert np.abs(pngs.astype(int) - theirs_u8.astype(int)).max() <= 1

    # the latent and the float image through the pipeline (same defaults), the last step's x̂0 being z_0
    pipe = LatentDiffusionPipeline.from_pretrained(run, device=device)
    final = {}
    ours_images = pipe(
        num_images=n,
        steps=steps,
        guidance_scale=scale,
        class_labels=label,
        seed=seed,
        output_type="pt",
        callback=lambda info: final.update(z=info["x0_pred"].cpu()),
    )
    latent_diff = (final["z"] - latents).abs().max().item()
    image_diff = (ours_images - images).abs().max().item()
    size = latents.abs().max().item()
    # 1e-4, relative to the latent's size where that exceeds 1: the 20-step-trained eps model's latents
    # reach a few hundred, where float32 itself resolves only ~3e-5; on CUDA 1e-4 relative is added
    # (oracle_tolerance: cuDNN's convolution algorithms differ from the CPU's)
    tol = oracle_tolerance(device, atol=1e-4)
    bound = tol["atol"] * max(1.0, size) + tol["rtol"] * size
    assert latent_diff <= bound, f"max |Δ latent| {latent_diff:.3g} at max |z| {size:.3g}"
    assert image_diff <= tol["atol"] + tol["rtol"], f"max |Δ image| {image_diff:.3g}"


def test_exported_edm_dit_run_matches_diffusers_edm_euler(tiny_run, tmp_path, capsys, device):
    """An EDM-preconditioned DiT exported: diffusers' DiTTransformer2DModel + EDMEulerScheduler loaded from
    the exported folder reproduce `latentdiff`'s euler sampler (Karras σ, c_in, ¼ ln σ, c_skip, c_out)."""
    from latentdiff.diffusion.config import DiffusionConfig
    from latentdiff.nets.dit import DiT, DiTConfig
    from latentdiff.training.config import TrainConfig
    from latentdiff.training.run import train_diffusion
    from latentdiff.training.stages import DataConfig, DiffusionStage

    run = tmp_path / "edm"
    stage = DiffusionStage(
        data=DataConfig(dataset="digits", resolution=8),
        backbone="dit",
        dit=DiTConfig(hidden_size=32, depth=2, num_heads=2, patch_size=2),
        diffusion=DiffusionConfig(prediction="edm", noise_sampling="log_normal", loss_weighting="edm"),
        train=TrainConfig(steps=2, batch_size=32, warmup_steps=1, checkpoint_every=0, device=TEST_DEVICE),
        conditional="yes",
        sample_steps=2,
    )
    train_diffusion(stage, run, autoencoder=tiny_run / "autoencoder", progress=False)
    model = DiT.from_pretrained(run / "dit")
    with torch.no_grad():  # weights far from the adaLN-Zero start, so every path carries signal
        g = torch.Generator().manual_seed(0)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    (run / "dit" / "ema.safetensors").unlink()
    model.save_pretrained(run / "dit")
    assert main(["-q", "export-diffusers", str(run), "--out", str(tmp_path / "exp")]) == 0
    capsys.readouterr()
    exp = tmp_path / "exp"
    config = json.loads((exp / "scheduler" / "scheduler_config.json").read_text())
    assert config["_class_name"] == "EDMDPMSolverMultistepScheduler"
    diffusers.EDMDPMSolverMultistepScheduler.from_pretrained(exp / "scheduler")  # loads as written
    scheduler = diffusers.EDMEulerScheduler.from_config(config)
    transformer = diffusers.DiTTransformer2DModel.from_pretrained(exp / "transformer").eval().to(device)
    meta = json.loads((exp / "latentdiff.json").read_text())

    n, steps, seed, label, scale = 2, 6, 5, 3, 2.0
    pipe = LatentDiffusionPipeline.from_pretrained(run, device=device)
    c, size = transformer.config.in_channels, transformer.config.sample_size
    latents = torch.randn((n, c, size, size), generator=torch.Generator().manual_seed(seed)).to(device)
    scheduler.set_timesteps(steps, device=device)
    latents = latents * scheduler.init_noise_sigma
    labels = torch.cat([torch.full((n,), label), torch.full((n,), meta["null_class"])]).to(device)
    with torch.no_grad():
        for t in scheduler.timesteps:
            x_in = scheduler.scale_model_input(latents, t)
            out = transformer(torch.cat([x_in, x_in]), timestep=t.expand(2 * n), class_labels=labels).sample
            cond, uncond = out.chunk(2)
            latents = scheduler.step(uncond + scale * (cond - uncond), t, latents).prev_sample
    final = {}
    pipe(
        num_images=n, steps=steps, sampler="euler", guidance_scale=scale, class_labels=label, seed=seed,
        output_type="pt", callback=lambda info: final.update(z=info["x"]),
    )
    assert latents.abs().max() > 0.1
    torch.testing.assert_close(final["z"], latents, **oracle_tolerance(device, atol=1e-4))
