"""Per-sample loss weights over timesteps and the weighted diffusion loss."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from latentdiff.diffusion.config import Prediction
from latentdiff.diffusion.schedule import NoiseSchedule
from latentdiff.diffusion.targets import check_prediction


def loss_weight(
    schedule: NoiseSchedule,
    t: Tensor,
    prediction: Prediction,
    kind: Literal["uniform", "min_snr"] = "uniform",
    gamma: float = 5.0,
) -> Tensor:
    """Float32 weights of shape t.shape.

    `min_snr` is Min-SNR-γ (Hang et al. 2023, sec. 3.4): the x_0-space weight min(SNR, γ) re-expressed for
    the network's target, i.e. min(SNR, γ)/SNR for ε, min(SNR, γ)/(SNR + 1) for v, min(SNR, γ) for x_0.
    """
    check_prediction(prediction)
    if kind == "uniform":
        return torch.ones(t.shape, dtype=torch.float32, device=t.device)
    if kind != "min_snr":
        raise ValueError(f"loss weighting must be 'uniform' or 'min_snr', got {kind!r}")
    snr = schedule.snr(t).to(t.device)
    if prediction == "eps":
        # min(SNR, γ)/SNR written as min(1, γ/SNR) so that a zero terminal SNR gives 1, not 0/0.
        weight = (gamma / snr).clamp(max=1.0)
    elif prediction == "v":
        weight = snr.clamp(max=gamma) / (snr + 1)
    else:
        weight = snr.clamp(max=gamma)
    return weight.float()


def diffusion_loss(model_output: Tensor, target: Tensor, weights: Tensor | None = None) -> Tensor:
    """Squared error averaged over every dimension but the batch, then the batch mean of weight × error
    (not renormalised by the sum of the weights, as in Hang et al. 2023). Computed in float32."""
    if model_output.shape != target.shape:
        raise ValueError(f"model output {tuple(model_output.shape)} and target {tuple(target.shape)} differ")
    per_sample = (model_output.float() - target.float()).square().flatten(1).mean(1)
    if weights is None:
        return per_sample.mean()
    if weights.shape != per_sample.shape:
        raise ValueError(f"weights must have shape {tuple(per_sample.shape)}, got {tuple(weights.shape)}")
    return (weights.float().to(per_sample.device) * per_sample).mean()
