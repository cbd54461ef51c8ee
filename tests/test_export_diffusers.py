"""A trained run exported to diffusers' formats runs in diffusers with the same numbers."""

from __future__ import annotations

import json

import pytest
import torch

from latentdiff.cli import main
from latentdiff.pipeline import LatentDiffusionPipeline

diffusers = pytest.importorskip("diffusers")


def test_exported_run_matches_in_diffusers(tiny_run, tmp_path, capsys):
    assert main(["-q", "export-diffusers", str(tiny_run), "--out", str(tmp_path / "exp")]) == 0
    capsys.readouterr()
    pipe = LatentDiffusionPipeline.from_pretrained(tiny_run, device="cpu")
    unet = diffusers.UNet2DModel.from_pretrained(tmp_path / "exp" / "unet").eval()
    vae = diffusers.AutoencoderKL.from_pretrained(tmp_path / "exp" / "vae").eval()
    scheduler = diffusers.DDPMScheduler.from_pretrained(tmp_path / "exp" / "scheduler")
    torch.testing.assert_close(
        scheduler.alphas_cumprod.double(), pipe.schedule.alphas_cumprod.double(), rtol=0, atol=1e-6
    )
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, *pipe.latent_shape, generator=g)
    t = torch.tensor([10.0, 700.0])
    labels = torch.tensor([3, pipe.num_classes])
    with torch.no_grad():
        ours = pipe.backbone(z, t, {"class": labels})
        theirs = unet(z, t, class_labels=labels).sample
        torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)
        images = torch.rand(2, 1, 8, 8, generator=g) * 2 - 1
        torch.testing.assert_close(
            vae.encode(images).latent_dist.mean, pipe.autoencoder.encode(images).mean, rtol=0, atol=1e-5
        )
        torch.testing.assert_close(vae.decode(z).sample, pipe.autoencoder.decode(z), rtol=0, atol=1e-5)
    meta = json.loads((tmp_path / "exp" / "latentdiff.json").read_text())
    assert meta["scale_factor"] == pipe.autoencoder.config.scale_factor and len(meta["class_names"]) == 10
