"""Configuration of the training loop shared by both stages."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping for one stage; `batch_size` is the global batch of one optimiser step."""

    steps: int = 10_000
    batch_size: int = 64
    grad_accum: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 500
    lr_schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    ema_warmup: bool = True
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    checkpoint_every: int = 1000
    keep_last: int = 2
    log_every: int = 25
    sample_every: int = 0
    eval_every: int = 0
    seed: int = 0
    device: str = "auto"
    max_minutes: float = 0.0
    # with max_minutes: after a few steps, lower `steps` to what the budget allows at the measured speed, so
    # that the learning-rate schedule completes within the budget (the run is then time-, not step-defined)
    fit_to_time: bool = False
    # an earlier version of the model kept as a model folder: the EMA weights are written once to
    # run_dir/<snapshot_folder> when `snapshot_fraction` of the steps are done (0: never). `latentdiff train`
    # uses it for the autoguidance guide of a model that is already the smallest preset
    snapshot_fraction: float = 0.0
    snapshot_folder: str = ""

    def __post_init__(self) -> None:
        checks = {
            "steps": self.steps >= 1,
            "batch_size": self.batch_size >= 1,
            "grad_accum": self.grad_accum >= 1,
            "lr": self.lr > 0,
            "keep_last": self.keep_last >= 1,
            "checkpoint_every": self.checkpoint_every >= 0,
            "ema_decay": 0.0 <= self.ema_decay < 1.0,
            "grad_clip": self.grad_clip >= 0,
            "max_minutes": self.max_minutes >= 0,
            "snapshot_fraction": 0.0 <= self.snapshot_fraction < 1.0,
            "snapshot_folder": bool(self.snapshot_folder) or not self.snapshot_fraction,
        }
        for key, ok in checks.items():
            if not ok:
                raise ValueError(f"train.{key} has an invalid value: {getattr(self, key)!r}")
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"train.batch_size ({self.batch_size}) must be divisible by "
                f"train.grad_accum ({self.grad_accum})"
            )

    def lr_multiplier(self, step: int) -> float:
        """Learning-rate factor at optimiser step `step`: linear warm-up, then constant or cosine decay to
        `min_lr_ratio` at `steps` (read at call time, so a run fitted to its time budget decays in it)."""
        if self.warmup_steps and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.lr_schedule == "cosine":
            span = max(1, self.steps - self.warmup_steps)
            progress = min(1.0, (step - self.warmup_steps) / span)
            return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0
