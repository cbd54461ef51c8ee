"""What the network predicts (ε, v or x_0) and the conversions between the three parameterisations.

With x_t = α x_0 + σ ε, α = sqrt(ᾱ_t), σ = sqrt(1 − ᾱ_t) (so α² + σ² = 1):
- ε-prediction (Ho et al. 2020): x_0 = (x_t − σ ε) / α;
- v-prediction (Salimans & Ho 2022, sec. 4 and appendix D): v = α ε − σ x_0, hence
  x_0 = α x_t − σ v and ε = σ x_t + α v;
- x_0-prediction: ε = (x_t − α x_0) / σ.
"""

from __future__ import annotations

import torch
from torch import Tensor

from latentdiff.diffusion.config import Prediction
from latentdiff.diffusion.schedule import NoiseSchedule

PREDICTIONS: tuple[str, ...] = ("eps", "v", "x0")


def check_prediction(prediction: str) -> None:
    """Raise a ValueError naming the valid parameterisations if `prediction` is not one of them."""
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {list(PREDICTIONS)}, got {prediction!r}")


def alpha_sigma_like(schedule: NoiseSchedule, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """(α, σ) at t, shaped (B, 1, …) to broadcast against `like` and cast to its dtype."""
    shape = (-1, *[1] * (like.ndim - 1))
    alpha, sigma = schedule.alpha_sigma(torch.as_tensor(t, device=like.device))
    return alpha.to(like.dtype).reshape(shape), sigma.to(like.dtype).reshape(shape)


def training_target(
    prediction: Prediction, z0: Tensor, noise: Tensor, schedule: NoiseSchedule, t: Tensor
) -> Tensor:
    """The regression target of the network for the sample x_t = add_noise(z0, noise, t)."""
    check_prediction(prediction)
    if prediction == "eps":
        return noise
    if prediction == "x0":
        return z0
    alpha, sigma = alpha_sigma_like(schedule, t, z0)
    return alpha * noise - sigma * z0


def predict_x0_eps(
    model_output: Tensor, x_t: Tensor, t: Tensor, schedule: NoiseSchedule, prediction: Prediction
) -> tuple[Tensor, Tensor]:
    """(x̂_0, ε̂) implied by the raw network output under the given parameterisation."""
    check_prediction(prediction)
    if model_output.shape != x_t.shape:
        raise ValueError(f"model output {tuple(model_output.shape)} does not match x_t {tuple(x_t.shape)}")
    dtype = torch.promote_types(model_output.dtype, x_t.dtype)
    out, x_t = model_output.to(dtype), x_t.to(dtype)
    alpha, sigma = alpha_sigma_like(schedule, t, x_t)
    if prediction == "eps":
        return (x_t - sigma * out) / alpha, out
    if prediction == "x0":
        return out, (x_t - alpha * out) / sigma
    return alpha * x_t - sigma * out, sigma * x_t + alpha * out
