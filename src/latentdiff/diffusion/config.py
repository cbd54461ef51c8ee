"""Configuration of the Stage 2 diffusion process (schedule, prediction target, loss weighting)."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

ScheduleKind = Literal["linear", "scaled_linear", "cosine"]
Prediction = Literal["eps", "v", "x0"]
LossWeighting = Literal["uniform", "min_snr"]
TimestepSampling = Literal["uniform"]


@dataclass
class DiffusionConfig:
    """The forward process and the training objective of the latent diffusion model.

    `beta_start`/`beta_end` are used by the `linear` and `scaled_linear` schedules only; Stable Diffusion's
    `scaled_linear` values are 0.00085 / 0.012.
    """

    schedule: ScheduleKind = "linear"
    num_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    zero_terminal_snr: bool = False
    prediction: Prediction = "eps"
    loss_weighting: LossWeighting = "uniform"
    min_snr_gamma: float = 5.0
    timestep_sampling: TimestepSampling = "uniform"

    def __post_init__(self) -> None:
        for name in ("schedule", "prediction", "loss_weighting", "timestep_sampling"):
            allowed = typing.get_args(typing.get_type_hints(DiffusionConfig)[name])
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {list(allowed)}")
        if self.num_timesteps < 2:
            raise ValueError(f"num_timesteps must be >= 2, got {self.num_timesteps}")
        if not 0.0 < self.beta_start < self.beta_end < 1.0:
            raise ValueError(
                f"need 0 < beta_start < beta_end < 1, got beta_start={self.beta_start}, "
                f"beta_end={self.beta_end}"
            )
        if self.min_snr_gamma <= 0:
            raise ValueError(f"min_snr_gamma must be > 0, got {self.min_snr_gamma}")
