"""Which samples and which random numbers each step uses, as pure functions of (seed, step).

Making the data order and the per-sample noise functions of the step number (rather than of a generator
that advances as training goes) is what lets a resumed run reproduce an uninterrupted one bit for bit,
and lets N processes reproduce a single process with the same global batch: sample j of step s gets the
same noise whichever rank and micro-batch it lands on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant (golden ratio) to decorrelate seeds


def mix_seed(*parts: int) -> int:
    h = 0
    for p in parts:
        h = (h * _MIX + int(p) + 1) % (2**63 - 1)
    return h


@dataclass(frozen=True)
class GlobalBatchSampler:
    """Epoch-wise random permutations of `num_items`, cut into global batches of `batch_size`.

    The last incomplete batch of an epoch is dropped so that every step sees a full batch.
    """

    num_items: int
    batch_size: int
    seed: int
    shuffle: bool = True

    def __post_init__(self) -> None:
        if self.num_items < self.batch_size:
            raise ValueError(
                f"the dataset has {self.num_items} items, fewer than one batch of {self.batch_size}: "
                "lower train.batch_size"
            )

    @property
    def steps_per_epoch(self) -> int:
        return self.num_items // self.batch_size

    def indices(self, step: int) -> torch.Tensor:
        """Dataset indices of the global batch of optimiser step `step` (0-based)."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        if self.shuffle:
            g = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
            order = torch.randperm(self.num_items, generator=g)
        else:
            order = torch.arange(self.num_items)
        return order[pos * self.batch_size : (pos + 1) * self.batch_size]


class BatchRandom:
    """Random numbers for the rows `rows` of a global batch of `global_size` samples at one step.

    Each call draws the tensor for the whole global batch from a generator seeded by (seed, step, call
    number) and returns this process's rows, so the numbers a sample receives do not depend on how the
    batch is split across ranks and micro-batches.
    """

    def __init__(
        self,
        seed: int,
        step: int,
        rows: Sequence[int] | torch.Tensor,
        global_size: int,
        device: torch.device | str = "cpu",
    ) -> None:
        self.seed, self.step = seed, step
        self.rows = torch.as_tensor(rows, dtype=torch.long)
        self.global_size = global_size
        self.device = torch.device(device)
        self._calls = 0

    def _generator(self) -> torch.Generator:
        self._calls += 1
        return torch.Generator().manual_seed(mix_seed(self.seed, self.step, self._calls))

    def randn(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        full = torch.randn((self.global_size, *shape), generator=self._generator(), dtype=dtype)
        return full[self.rows].to(self.device)

    def rand(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        full = torch.rand((self.global_size, *shape), generator=self._generator(), dtype=dtype)
        return full[self.rows].to(self.device)

    def randint(self, low: int, high: int, *shape: int) -> torch.Tensor:
        full = torch.randint(low, high, (self.global_size, *shape), generator=self._generator())
        return full[self.rows].to(self.device)

    def generator(self) -> torch.Generator:
        """A generator for draws that are not per-sample (same on every rank)."""
        return self._generator()
