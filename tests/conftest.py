"""Shared fixtures: a tiny two-stage run on the 8×8 `digits` set, trained once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from latentdiff.autoencoder.config import AutoencoderConfig
from latentdiff.diffusion.config import DiffusionConfig
from latentdiff.nets.unet import UNetConfig
from latentdiff.training.config import TrainConfig
from latentdiff.training.stages import AutoencoderStage, DataConfig, DiffusionStage


@pytest.fixture(autouse=True)
def _one_intra_op_thread():
    """Every model in the suite is tiny: a second OpenMP thread buys nothing, and on a shared 2-core machine
    a busy neighbour makes its barrier waits cost 10-100x the work itself."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


TINY_DATA = DataConfig(dataset="digits", resolution=8, eval_images=64)


def tiny_autoencoder_stage(**model) -> AutoencoderStage:
    cfg = dict(
        kind="kl",
        base_channels=16,
        channel_mult=(1, 2),
        num_res_blocks=1,
        latent_channels=4,
        mid_attention=False,
        groups=8,
    )
    cfg.update(model)
    return AutoencoderStage(
        data=TINY_DATA,
        model=AutoencoderConfig(**cfg),
        train=TrainConfig(
            steps=20, batch_size=32, lr=2e-3, warmup_steps=2, checkpoint_every=10, log_every=5, device="cpu"
        ),
        stats_images=500,
    )


def tiny_diffusion_stage(**train) -> DiffusionStage:
    tcfg = dict(
        steps=20, batch_size=32, lr=2e-3, warmup_steps=2, checkpoint_every=10, log_every=5, device="cpu"
    )
    tcfg.update(train)
    return DiffusionStage(
        data=TINY_DATA,
        unet=UNetConfig(
            base_channels=16,
            channel_mult=(1, 2),
            num_res_blocks=1,
            attention_levels=(1,),
            head_channels=16,
            groups=8,
        ),
        diffusion=DiffusionConfig(),
        train=TrainConfig(**tcfg),
        conditional="yes",
        sample_steps=4,
    )


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run folder with a trained tiny KL autoencoder and class-conditional U-Net on digits."""
    from latentdiff.training.run import train_autoencoder, train_diffusion

    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("tiny_run")
    train_autoencoder(tiny_autoencoder_stage(), run, progress=False)
    train_diffusion(tiny_diffusion_stage(), run, progress=False)
    return run
