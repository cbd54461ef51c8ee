"""Exact resume of the real stages: a `latentdiff train-*` command SIGKILLed mid-run and resumed with
`--resume` ends with the same weights, bit for bit, as the same command run without interruption.

The models are tiny but real (channels-last convolutions in the autoencoder and the U-Net, the PatchGAN
discriminator's second optimiser, the DiT), so the AdamW moments, EMA shadows and RNG states of each have to
come back exactly, in the memory layout of their parameters.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from latentdiff.io.checkpoint import load_tensors
from latentdiff.training.trainer_state import checkpoint_root, latest_checkpoint, list_checkpoints

HERE = Path(__file__).parent
STAGE_RUN = HERE / "stage_run.py"

STEPS, CHECKPOINT_EVERY, KILL_AT = 8, 3, 7  # checkpoints at 3 and 6; killed before step 8 runs

COMMON = [
    "--data", "digits", "--resolution", "8", "--steps", str(STEPS), "--batch-size", "16", "--seed", "3",
    "--lr", "3e-3", "--device", "cpu",
    "--set", "train.warmup_steps=2", "--set", f"train.checkpoint_every={CHECKPOINT_EVERY}",
    "--set", "train.ema_decay=0.9", "--set", "train.log_every=1",
]  # fmt: skip
TINY_AE = [
    "train-autoencoder", "--f", "2",
    "--set", "model.base_channels=16", "--set", "model.groups=8", "--set", "model.num_res_blocks=1",
    "--set", "model.mid_attention=false", "--set", "stats_images=64", "--set", "data.eval_images=16",
]  # fmt: skip
GAN = ["--disc-start", "2", "--disc-weight", "0.5"]  # the discriminator has trained before each checkpoint
TINY_UNET = [
    "train-diffusion", "--backbone", "unet",
    "--set", "unet.base_channels=16", "--set", "unet.groups=8", "--set", "unet.num_res_blocks=1",
    "--set", "unet.channel_mult=[1,2]", "--set", "unet.attention_levels=[1]",
    "--set", "unet.head_channels=16", "--set", "sample_steps=2",
]  # fmt: skip
TINY_DIT = [
    "train-diffusion", "--backbone", "dit",
    "--set", "dit.hidden_size=32", "--set", "dit.depth=2", "--set", "dit.num_heads=2",
    "--set", "dit.patch_size=2", "--set", "sample_steps=2",
]  # fmt: skip

CASES = {
    "kl": (TINY_AE, "autoencoder"),
    "kl-gan": ([*TINY_AE, *GAN], "autoencoder"),
    "unet": (TINY_UNET, "unet"),
    "dit": (TINY_DIT, "dit"),
}


def stage_env(**hooks: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAGE_RUN_")}
    env.update(OMP_NUM_THREADS="1", **hooks)
    return env


def run_stage(argv: list[str], timeout: float = 300, **hooks: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(STAGE_RUN), "-q", *argv],
        env=stage_env(**hooks),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def final_tensors(run: Path, folder: str) -> dict[str, torch.Tensor]:
    """Raw and EMA weights of the stage's model, and the modules trained alongside (the discriminator)."""
    out = {f"model.{k}": v for k, v in load_tensors(run / folder / "model.safetensors").items()}
    out.update({f"ema.{k}": v for k, v in load_tensors(run / folder / "ema.safetensors").items()})
    last = latest_checkpoint(checkpoint_root(run, folder))
    assert last is not None and last.name == f"step_{STEPS:08d}"
    out.update({f"extra.{k}": v for k, v in load_tensors(last / "extra.safetensors").items()})
    return out


def assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = {k: (a[k].float() - b[k].float()).abs().max().item() for k in a if not torch.equal(a[k], b[k])}
    worst = max(differ.values(), default=0.0)
    assert not differ, f"{len(differ)} tensors differ, the most by {worst:.3g}: {sorted(differ)[:4]}"


@pytest.mark.parametrize(
    "case, precision",
    [
        ("kl", "fp32"),
        ("kl-gan", "fp32"),
        ("kl-gan", "bf16"),
        ("unet", "fp32"),
        ("unet", "bf16"),
        ("dit", "bf16"),
    ],
)
def test_kill_9_then_resume_equals_uninterrupted(request, tmp_path, case, precision):
    stage_args, folder = CASES[case]
    if folder != "autoencoder":  # Stage 2 on the session's autoencoder and its latent cache
        tiny_run = request.getfixturevalue("tiny_run")
        stage_args = [*stage_args, "--autoencoder", str(tiny_run), "--latents", str(tiny_run / "latents")]
    argv = [*stage_args, *COMMON, "--precision", precision]

    ref = run_stage([*argv, "--out", str(tmp_path / "ref")])
    assert ref.returncode == 0, ref.stderr[-3000:]

    run = tmp_path / "run"
    killed = run_stage([*argv, "--out", str(run)], STAGE_RUN_KILL_AT=str(KILL_AT))
    assert killed.returncode == -9, killed.stderr[-3000:]  # really killed by SIGKILL mid-run
    assert [s for s, _ in list_checkpoints(checkpoint_root(run, folder))] == [3, 6]
    resumed = run_stage([*argv, "--out", str(run), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    assert_bit_identical(final_tensors(tmp_path / "ref", folder), final_tensors(run, folder))
