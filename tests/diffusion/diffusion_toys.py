"""Shared fixtures of the diffusion tests: a deterministic stand-in network and diffusers oracles."""

from __future__ import annotations

import torch
from torch import Tensor

from latentdiff.diffusion import DiffusionConfig, NoiseSchedule, make_schedule

DIFFUSERS_PREDICTION = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}
DATA_STD = 0.5


def toy_model(schedule: NoiseSchedule, prediction: str):
    """model(x, t, cond) -> raw output: the exact denoiser of Gaussian data N(0, DATA_STD²) in the given
    parameterisation, plus a smooth non-linear term in (x, t, label) so that errors cannot cancel.

    `t` (the VP preconditionings' c_noise) may be a scalar (diffusers) or of shape (B,) (latentdiff),
    integer or fractional; ``cond["class"]`` is an optional label.
    """

    def model(x: Tensor, t: Tensor, cond: dict[str, Tensor] | None = None) -> Tensor:
        class_labels = (cond or {}).get("class")
        t = torch.as_tensor(t, device=x.device)
        t = (t.expand(x.shape[0]) if t.ndim == 0 else t).reshape(-1, *[1] * (x.ndim - 1))
        alpha, sigma = (c.to(x.dtype) for c in schedule.alpha_sigma(t))
        c2 = DATA_STD**2
        denom = alpha**2 * c2 + sigma**2
        x0_opt, eps_opt = alpha * c2 * x / denom, sigma * x / denom
        label = 0.0 if class_labels is None else class_labels.to(x.dtype).reshape(t.shape)
        wiggle = 0.1 * torch.tanh(0.3 * x + torch.sin(t.to(x.dtype) / 100 + label))
        exact = {"eps": eps_opt, "x0": x0_opt, "v": alpha * eps_opt - sigma * x0_opt}[prediction]
        return exact + wiggle

    return model


def schedule_for(schedule: str = "linear", **kw) -> NoiseSchedule:
    return make_schedule(DiffusionConfig(schedule=schedule, **kw))


def diffusers_scheduler(cls, schedule: NoiseSchedule, prediction: str, **config):
    """A diffusers scheduler on the same betas; its ᾱ table is replaced by ours in float64 so that both
    sides compute coefficients from identical numbers (diffusers builds its table in float32)."""
    sched = cls(
        num_train_timesteps=schedule.num_timesteps,
        trained_betas=schedule.betas.numpy(),
        prediction_type=DIFFUSERS_PREDICTION[prediction],
        **config,
    )
    sched.alphas_cumprod = schedule.alphas_cumprod.clone()
    return sched
