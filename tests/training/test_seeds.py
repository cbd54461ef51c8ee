"""Seeds that seed: the same stage run twice with the same `train.seed` gives identical weights, whatever
the caller's global RNG holds; another seed gives other initial weights."""

from __future__ import annotations

from pathlib import Path

import torch

from latentdiff.autoencoder.config import AutoencoderConfig
from latentdiff.autoencoder.losses import AutoencoderLossConfig
from latentdiff.io.checkpoint import load_tensors
from latentdiff.nets.unet import UNetConfig
from latentdiff.training.config import TrainConfig
from latentdiff.training.run import seeded_init, train_autoencoder, train_diffusion
from latentdiff.training.stages import AutoencoderStage, DataConfig, DiffusionStage

DATA = DataConfig(dataset="digits", resolution=8, eval_images=16)


def _train(seed: int) -> TrainConfig:
    # pinned to the CPU: runs are compared bit for bit, and cuDNN/atomics are not bit-reproducible
    return TrainConfig(steps=2, batch_size=16, warmup_steps=1, checkpoint_every=0, seed=seed, device="cpu")


def autoencoder_stage(seed: int) -> AutoencoderStage:
    model = AutoencoderConfig(
        kind="kl", base_channels=8, channel_mult=(1, 2), num_res_blocks=1, mid_attention=False, groups=4
    )
    loss = AutoencoderLossConfig(disc_start=0, disc_weight=0.5)  # the discriminator's weights too
    return AutoencoderStage(data=DATA, model=model, loss=loss, train=_train(seed), stats_images=64)


def diffusion_stage(seed: int) -> DiffusionStage:
    unet = UNetConfig(
        base_channels=16,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_levels=(1,),
        head_channels=16,
        groups=8,
    )
    return DiffusionStage(data=DATA, unet=unet, train=_train(seed), sample_steps=2)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_tensors(folder / "model.safetensors")


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _discriminator(run: Path) -> dict[str, torch.Tensor]:
    last = sorted((run / "trainer_state" / "autoencoder").glob("step_*"))[-1]
    return load_tensors(last / "extra.safetensors")


def test_autoencoder_and_discriminator_follow_the_seed(tmp_path):
    runs = {}
    for name, global_seed, seed in [("a", 1, 7), ("b", 2, 7), ("c", 1, 8)]:
        torch.manual_seed(global_seed)  # what the caller's RNG holds must not matter
        train_autoencoder(autoencoder_stage(seed), tmp_path / name, progress=False)
        runs[name] = (_weights(tmp_path / name / "autoencoder"), _discriminator(tmp_path / name))
    assert runs["a"][1], "the discriminator trained"
    assert _same(runs["a"][0], runs["b"][0]) and _same(runs["a"][1], runs["b"][1])
    assert not _same(runs["a"][0], runs["c"][0]) and not _same(runs["a"][1], runs["c"][1])


def test_backbone_follows_the_seed(tiny_run, tmp_path):
    runs = {}
    for name, global_seed, seed in [("a", 1, 7), ("b", 2, 7), ("c", 1, 8)]:
        torch.manual_seed(global_seed)
        ae, latents = tiny_run / "autoencoder", tiny_run / "latents"
        train_diffusion(diffusion_stage(seed), tmp_path / name, ae, latents, progress=False)
        runs[name] = _weights(tmp_path / name / "unet")
    assert _same(runs["a"], runs["b"])
    assert not _same(runs["a"], runs["c"])


def test_seeded_init_leaves_the_callers_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with seeded_init(5, "backbone"):
        first = torch.nn.Linear(4, 4).weight.detach().clone()
    assert torch.equal(torch.rand(3), expected)
    with seeded_init(5, "backbone"):
        again = torch.nn.Linear(4, 4).weight.detach().clone()
    assert torch.equal(first, again)
