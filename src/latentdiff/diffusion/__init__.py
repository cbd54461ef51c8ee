"""Stage 2 diffusion math: schedules, forward process, targets, loss weights, samplers, guidance.

Imports only torch: never the autoencoder, the networks or the data.
"""

from latentdiff.diffusion.config import DiffusionConfig
from latentdiff.diffusion.guidance import Denoiser
from latentdiff.diffusion.samplers import SAMPLERS, get_sampler, sampler_timesteps
from latentdiff.diffusion.schedule import NoiseSchedule, make_schedule
from latentdiff.diffusion.targets import predict_x0_eps, training_target
from latentdiff.diffusion.timesteps import sample_timesteps
from latentdiff.diffusion.weighting import diffusion_loss, loss_weight

__all__ = [
    "SAMPLERS",
    "Denoiser",
    "DiffusionConfig",
    "NoiseSchedule",
    "diffusion_loss",
    "get_sampler",
    "loss_weight",
    "make_schedule",
    "predict_x0_eps",
    "sample_timesteps",
    "sampler_timesteps",
    "training_target",
]
