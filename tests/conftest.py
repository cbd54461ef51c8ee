"""Shared fixtures: a tiny two-stage run on the 8×8 `digits` set, trained once per test session, and the
device the suite runs on (LATENTDIFF_TEST_DEVICE, default cpu; see suite_device.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from latentdiff.autoencoder.config import AutoencoderConfig
from latentdiff.diffusion.config import DiffusionConfig
from latentdiff.nets.unet import UNetConfig
from latentdiff.training.config import TrainConfig
from latentdiff.training.stages import AutoencoderStage, DataConfig, DiffusionStage

if str(Path(__file__).parent) not in sys.path:  # suite_device, also when this file is loaded by path
    sys.path.insert(0, str(Path(__file__).parent))
from suite_device import ENV_VAR, TEST_DEVICE, device_problem, on_cuda  # noqa: E402


def pytest_configure(config):
    problem = device_problem(TEST_DEVICE)
    if problem is not None:
        raise pytest.UsageError(f"{problem}. Unset {ENV_VAR} to run the suite on the CPU.")


@pytest.fixture
def device() -> torch.device:
    """The device a test runs its models and tensors on: torch.device(LATENTDIFF_TEST_DEVICE)."""
    return torch.device(TEST_DEVICE)


@pytest.fixture(autouse=True, scope="session")
def _fp32_on_cuda():
    """On CUDA the suite computes in true fp32: TF32 off for cuDNN convolutions (on by default) and for
    matmuls, so numerical comparisons (diffusers oracles, batch independence) keep tight tolerances.
    Nothing changes on the CPU."""
    if not on_cuda(TEST_DEVICE):
        yield
        return
    previous = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = previous


@pytest.fixture(autouse=True, scope="session")
def _no_reference_statistics_of_temporary_folders_left_behind():
    """Tests compute FID reference statistics of temporary image folders (~35 MB each) into the user's
    cache, `<cache>/fid_stats/`; the ones this session added for anything but a built-in dataset are
    deleted at its end, so that a run of the suite does not leave a gigabyte behind."""
    from latentdiff.data.builtin import BUILTIN
    from latentdiff.io.paths import data_root

    folder = data_root() / "fid_stats"
    before = set(folder.iterdir()) if folder.is_dir() else set()
    yield
    if not folder.is_dir():
        return
    for path in set(folder.iterdir()) - before:
        if not any(path.name.startswith(f"{name}-") for name in BUILTIN):
            path.unlink(missing_ok=True)


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
            steps=20,
            batch_size=32,
            lr=2e-3,
            warmup_steps=2,
            checkpoint_every=10,
            log_every=5,
            device=TEST_DEVICE,
        ),
        stats_images=500,
    )


def tiny_diffusion_stage(**train) -> DiffusionStage:
    tcfg = dict(
        steps=20, batch_size=32, lr=2e-3, warmup_steps=2, checkpoint_every=10, log_every=5, device=TEST_DEVICE
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
