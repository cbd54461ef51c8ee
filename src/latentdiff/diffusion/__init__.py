"""Stage 2 diffusion math: schedules, noise levels, preconditioning, loss weights, samplers, guidance.

Imports only torch: never the autoencoder, the networks or the data.
"""

from latentdiff.diffusion.config import DiffusionConfig
from latentdiff.diffusion.guidance import Denoiser
from latentdiff.diffusion.noise_levels import (
    NoiseLevels,
    levels_at_sigmas,
    levels_at_timesteps,
    sample_noise_levels,
)
from latentdiff.diffusion.preconditioning import Preconditioning
from latentdiff.diffusion.samplers import SAMPLERS, get_sampler, sampler_timesteps
from latentdiff.diffusion.schedule import NoiseSchedule, make_schedule
from latentdiff.diffusion.weighting import diffusion_loss, loss_weight

__all__ = [
    "SAMPLERS",
    "Denoiser",
    "DiffusionConfig",
    "NoiseLevels",
    "NoiseSchedule",
    "Preconditioning",
    "diffusion_loss",
    "get_sampler",
    "levels_at_sigmas",
    "levels_at_timesteps",
    "loss_weight",
    "make_schedule",
    "sample_noise_levels",
    "sampler_timesteps",
]
