"""Configuration of the Stage 2 diffusion process: schedule, preconditioning, noise levels, loss weights."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

ScheduleKind = Literal["linear", "scaled_linear", "cosine"]
Prediction = Literal["eps", "v", "x0", "edm"]
LossWeighting = Literal["uniform", "min_snr", "edm"]
NoiseSampling = Literal["uniform", "log_normal", "logit_normal"]

# (mean, std) of the normal behind each noise-level distribution when the config leaves them unset:
# EDM's ln σ ~ N(−1.2, 1.2²) (Karras et al. 2022, Table 1), SD3's logit-normal(0, 1) (Esser et al. 2024,
# sec. 3.1, eq. 19).
NOISE_DEFAULTS: dict[str, tuple[float, float]] = {"log_normal": (-1.2, 1.2), "logit_normal": (0.0, 1.0)}


@dataclass
class DiffusionConfig:
    """The forward process and the training objective of the latent diffusion model.

    - `schedule` (+ `beta_start`/`beta_end` for `linear`/`scaled_linear`; SD's `scaled_linear` values are
      0.00085 / 0.012) is the table of noise levels the samplers step through.
    - `prediction` is the preconditioning of the network, D(x; σ) = c_skip x + c_out F(c_in x; c_noise)
      (Karras et al. 2022, Table 1): `eps`, `v` and `x0` are the VP parametrisations (c_noise = the
      timestep), `edm` is EDM's with `sigma_data` (c_noise = ¼ ln σ). Latents are scaled to unit variance,
      hence the default sigma_data 1.
    - `noise_sampling`: which noise levels training draws: `uniform` timesteps (Ho et al. 2020),
      `log_normal` σ (EDM) or `logit_normal` timesteps (SD3); `noise_mean`/`noise_std` override the normal
      behind the last two (defaults in `NOISE_DEFAULTS`).
    - `loss_weighting`: `uniform` (weight 1 on the network's target), `min_snr` (Hang et al. 2023, with
      `min_snr_gamma`) or `edm` (λ(σ) = (σ² + σ_d²)/(σ σ_d)², Karras et al. 2022, eq. 8 and Table 1).
    """

    schedule: ScheduleKind = "linear"
    num_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    zero_terminal_snr: bool = False
    prediction: Prediction = "eps"
    sigma_data: float = 1.0
    noise_sampling: NoiseSampling = "uniform"
    noise_mean: float | None = None
    noise_std: float | None = None
    loss_weighting: LossWeighting = "uniform"
    min_snr_gamma: float = 5.0

    def __post_init__(self) -> None:
        for name in ("schedule", "prediction", "loss_weighting", "noise_sampling"):
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
        if self.sigma_data <= 0:
            raise ValueError(f"sigma_data must be > 0, got {self.sigma_data}")
        if self.sigma_data != 1.0 and self.prediction != "edm" and self.loss_weighting != "edm":
            raise ValueError("sigma_data is used by prediction=edm or loss_weighting=edm only")
        if self.noise_sampling == "uniform" and (self.noise_mean is not None or self.noise_std is not None):
            raise ValueError("noise_mean/noise_std apply to noise_sampling=log_normal or logit_normal only")
        if self.noise_std is not None and self.noise_std <= 0:
            raise ValueError(f"noise_std must be > 0, got {self.noise_std}")

    @property
    def noise_normal(self) -> tuple[float, float]:
        """(mean, std) of the normal behind `log_normal`/`logit_normal` noise sampling."""
        mean, std = NOISE_DEFAULTS.get(self.noise_sampling, (0.0, 1.0))
        return (
            mean if self.noise_mean is None else self.noise_mean,
            std if self.noise_std is None else self.noise_std,
        )


def upgrade_diffusion_dict(data: dict) -> dict:
    """A scheduler.json / config.yaml section written before noise sampling was configurable: its
    `timestep_sampling: uniform` is today's `noise_sampling: uniform`."""
    data = dict(data)
    old = data.pop("timestep_sampling", None)
    if old is not None:
        data.setdefault("noise_sampling", old)
    return data
