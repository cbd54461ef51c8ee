"""Stand-ins for the data tests: a small synthetic dataset and an autoencoder with known outputs.

Run as a script, it is one rank of a gloo process group encoding the synthetic dataset:
`python data_fakes.py RANK WORLD_SIZE INIT_FILE OUT_DIR KIND FLIP`.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from latentdiff.data.dataset import ArrayImageDataset

VQ_CODES = 8


def synthetic_dataset(
    n: int = 37, channels: int = 1, resolution: int = 8, seed: int = 0
) -> ArrayImageDataset:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, channels, resolution, resolution), dtype=np.uint8)
    labels = rng.integers(0, 3, size=n)
    return ArrayImageDataset(images, labels, name="synthetic", class_names=["a", "b", "c"])


def pooled(images: torch.Tensor) -> torch.Tensor:
    """The fake encoder: 2×2 average pooling (so f = 2)."""
    return F.avg_pool2d(images, 2)


def fake_std(mean: torch.Tensor) -> torch.Tensor:
    return 0.1 + mean.abs() / 3.0


def fake_indices(mean: torch.Tensor) -> torch.Tensor:
    return ((mean.mean(1) + 1) * (VQ_CODES - 1) / 2).round().long()


class FakeAutoencoder(torch.nn.Module):
    """`encode(x)` → mean = avg-pool(x), std = 0.1 + |mean|/3, VQ indices = mean over channels binned."""

    def __init__(self, kind: str = "kl", fail_after: int | None = None) -> None:
        super().__init__()
        self.config = SimpleNamespace(kind=kind)
        self.fail_after = fail_after
        self.calls = 0
        self.modes_seen: list[bool] = []
        self.grad_enabled_seen: list[bool] = []

    def encode(self, x: torch.Tensor) -> SimpleNamespace:
        self.calls += 1
        self.modes_seen.append(self.training)
        self.grad_enabled_seen.append(torch.is_grad_enabled())
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("simulated crash while encoding")
        mean = pooled(x)
        indices = fake_indices(mean) if self.config.kind == "vq" else None
        return SimpleNamespace(mean=mean, std=fake_std(mean), indices=indices)

    def hash(self) -> str:
        return f"fake-{self.config.kind}-0123"


def _rank_main(rank: int, world: int, init_file: str, out_dir: str, kind: str, flip: bool) -> None:
    import torch.distributed as dist

    from latentdiff.data.latent_cache import encode_dataset

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        cache = encode_dataset(FakeAutoencoder(kind), synthetic_dataset(), out_dir, batch_size=4, flip=flip)
        assert len(cache) == len(synthetic_dataset()) * (2 if flip else 1)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    rank_, world_, init_, out_, kind_, flip_ = sys.argv[1:7]
    _rank_main(int(rank_), int(world_), init_, out_, kind_, flip_ == "1")
