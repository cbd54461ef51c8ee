"""What a stage must provide to be trained by `Trainer`: the contract between the loop and each stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from latentdiff.training.batching import BatchRandom


@dataclass
class StepOutput:
    """The loss one phase back-propagates (already averaged over its micro-batch) and scalars to log."""

    loss: torch.Tensor
    logs: dict[str, float | torch.Tensor] = field(default_factory=dict)


@dataclass
class OptimizerSpec:
    """Optimiser settings of an extra module (e.g. a discriminator); unset fields follow `TrainConfig`."""

    lr: float | None = None
    betas: tuple[float, float] | None = None
    weight_decay: float | None = None


class TrainTask(Protocol):
    """A stage seen by the training loop.

    `model` is the network that is optimised, averaged (EMA) and exported to `run_dir/<name>/`.
    `extra_modules` are trained alongside with their own optimiser (the autoencoder's discriminator) and
    live only in the trainer state. Each optimiser step runs the `phases(step)` in order ("model" is the
    main module's phase; any other phase name is an extra module's); a phase runs over every micro-batch,
    and `ctx` (one dict per micro-batch and step) carries results from one phase to the next.
    """

    name: str
    model: nn.Module

    def extra_modules(self) -> dict[str, tuple[nn.Module, OptimizerSpec]]: ...

    def num_items(self) -> int: ...

    def get_batch(self, indices: torch.Tensor, device: torch.device) -> Any: ...

    def phases(self, step: int) -> list[str]: ...

    def phase_loss(
        self,
        phase: str,
        modules: dict[str, nn.Module],
        batch: Any,
        ctx: dict[str, Any],
        rng: BatchRandom,
        step: int,
    ) -> StepOutput: ...

    def save_model(
        self, path: Path, model_state: dict[str, torch.Tensor], ema_state: dict[str, torch.Tensor] | None
    ) -> None: ...

    def samples(self, model: nn.Module, step: int) -> torch.Tensor | None: ...

    def evaluate(self, model: nn.Module, step: int) -> dict[str, float]: ...
