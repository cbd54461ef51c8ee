"""The denoiser every sampler calls: network output → (x̂_0, ε̂), with classifier-free guidance."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import Tensor

from latentdiff.diffusion.config import Prediction
from latentdiff.diffusion.schedule import NoiseSchedule
from latentdiff.diffusion.targets import alpha_sigma_like, check_prediction, predict_x0_eps

log = logging.getLogger(__name__)

Model = Callable[[Tensor, Tensor, Tensor | None], Tensor]


class Denoiser:
    """Wrap `model(x_t, t, class_labels) -> raw output` as `denoiser(x_t, t) -> (x̂_0, ε̂)`.

    x_t is in variance-preserving scale and t has shape (B,). With `guidance_scale` s ≠ 1 the raw outputs
    are combined as uncond + s · (cond − uncond) (Ho & Salimans 2022, eq. 6, written for the raw output,
    which is affine in ε̂ and x̂_0 at fixed x_t and t); cond and uncond come from ONE forward pass over the
    batch doubled with `null_label`. With s = 1 only the conditional pass runs. `clip_x0=(lo, hi)` clamps
    x̂_0 and re-derives ε̂ from it so that x_t = α x̂_0 + σ ε̂ still holds.
    """

    def __init__(
        self,
        model: Model,
        schedule: NoiseSchedule,
        prediction: Prediction,
        class_labels: Tensor | None = None,
        guidance_scale: float = 1.0,
        null_label: int | None = None,
        clip_x0: tuple[float, float] | None = None,
    ) -> None:
        check_prediction(prediction)
        if guidance_scale != 1.0 and (class_labels is None or null_label is None):
            raise ValueError(
                f"guidance_scale={guidance_scale} needs class_labels and null_label (the unconditional "
                "class); use guidance_scale=1.0 for an unconditional model"
            )
        if clip_x0 is not None and not clip_x0[0] < clip_x0[1]:
            raise ValueError(f"clip_x0 must be (low, high) with low < high, got {clip_x0}")
        if prediction == "eps" and schedule.alphas_cumprod[-1] == 0:
            log.warning(
                "eps-prediction on a zero-terminal-SNR schedule: x0 is undefined at t = %d, so sampling from "
                "there gives NaN (Lin et al. 2024 use v-prediction)",
                schedule.num_timesteps - 1,
            )
        self.model = model
        self.schedule = schedule
        self.prediction = prediction
        self.class_labels = class_labels
        self.guidance_scale = float(guidance_scale)
        self.null_label = null_label
        self.clip_x0 = clip_x0

    def model_output(self, x_t: Tensor, t: Tensor) -> Tensor:
        """The (guided) raw network output for x_t at timesteps t of shape (B,)."""
        labels = self.class_labels
        if labels is not None:
            if labels.shape != (x_t.shape[0],):
                raise ValueError(f"class_labels must have shape ({x_t.shape[0]},), got {tuple(labels.shape)}")
            labels = labels.to(x_t.device)
        if self.guidance_scale == 1.0:
            return self.model(x_t, t, labels)
        null = torch.full_like(labels, self.null_label)
        both = self.model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([labels, null]))
        cond, uncond = both.chunk(2)
        return uncond + self.guidance_scale * (cond - uncond)

    def __call__(self, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        t = torch.as_tensor(t, device=x_t.device)
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        x0, eps = predict_x0_eps(self.model_output(x_t, t), x_t, t, self.schedule, self.prediction)
        if self.clip_x0 is None:
            return x0, eps
        x0 = x0.clamp(*self.clip_x0)
        alpha, sigma = alpha_sigma_like(self.schedule, t, x0)
        return x0, (x_t.to(x0.dtype) - alpha * x0) / sigma
