"""Stage 1 as a training task: the random numbers a sample receives do not depend on how the global batch
is split into ranks and micro-batches, so N processes (or gradient accumulation) train as one process."""

from __future__ import annotations

import torch

from latentdiff.autoencoder.config import AutoencoderConfig
from latentdiff.autoencoder.losses import AutoencoderLossConfig
from latentdiff.autoencoder.model import Autoencoder
from latentdiff.data.load import load_dataset
from latentdiff.training.autoencoder_task import AutoencoderTask
from latentdiff.training.batching import BatchRandom


def test_posterior_sample_of_a_sample_is_the_same_in_any_split_of_the_batch():
    data = load_dataset("digits", "train", 8, None, False, 32)
    torch.manual_seed(0)
    cfg = AutoencoderConfig(
        kind="kl", in_channels=1, resolution=8, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
        mid_attention=False, groups=4,
    )  # fmt: skip
    model = Autoencoder(cfg)
    task = AutoencoderTask(model, AutoencoderLossConfig(disc_weight=0.0), data, data)
    batch = task.get_batch(torch.arange(16), torch.device("cpu"))

    def reconstruct(rows: torch.Tensor) -> torch.Tensor:
        ctx: dict = {}
        rng = BatchRandom(seed=5, step=3, rows=rows, global_size=16)
        with torch.no_grad():
            task.phase_loss("model", {"model": model}, batch[rows], ctx, rng, step=3)
        return ctx["reconstruction"]

    whole = reconstruct(torch.arange(16))
    halves = torch.cat([reconstruct(torch.arange(8)), reconstruct(torch.arange(8, 16))])
    torch.testing.assert_close(halves, whole, rtol=0, atol=1e-5)
    # and the noise is really random: the same images under another step's numbers reconstruct otherwise
    other = BatchRandom(seed=5, step=4, rows=torch.arange(16), global_size=16)
    ctx: dict = {}
    with torch.no_grad():
        task.phase_loss("model", {"model": model}, batch, ctx, other, step=4)
    assert (ctx["reconstruction"] - whole).abs().max() > 1e-3
