"""Stage 1: KL, VQ and identity autoencoders behind one interface, their losses, the diffusers
AutoencoderKL format, and the latent statistics that scale Stage 2's inputs."""

from latentdiff.autoencoder.config import AutoencoderConfig
from latentdiff.autoencoder.discriminator import PatchDiscriminator, fit_n_layers, patch_output_size
from latentdiff.autoencoder.losses import (
    AutoencoderLossConfig,
    adaptive_weight,
    disc_active,
    discriminator_loss,
    generator_loss,
    hinge_d_loss,
    hinge_g_loss,
    make_discriminator,
    reconstruction_loss,
)
from latentdiff.autoencoder.model import Autoencoder, AutoencoderOutput
from latentdiff.autoencoder.posterior import DeterministicPosterior, DiagonalGaussian, Posterior
from latentdiff.autoencoder.quantizer import QuantizerOutput, VectorQuantizer, codebook_usage, perplexity
from latentdiff.autoencoder.stats import apply_latent_stats, compute_latent_stats
from latentdiff.autoencoder.vae_diffusers_format import (
    DiffusersFormatError,
    load_diffusers_autoencoder,
    save_diffusers_autoencoder,
)

__all__ = [
    "Autoencoder",
    "AutoencoderConfig",
    "AutoencoderLossConfig",
    "AutoencoderOutput",
    "DeterministicPosterior",
    "DiagonalGaussian",
    "DiffusersFormatError",
    "PatchDiscriminator",
    "Posterior",
    "QuantizerOutput",
    "VectorQuantizer",
    "adaptive_weight",
    "apply_latent_stats",
    "codebook_usage",
    "compute_latent_stats",
    "disc_active",
    "discriminator_loss",
    "fit_n_layers",
    "generator_loss",
    "hinge_d_loss",
    "hinge_g_loss",
    "load_diffusers_autoencoder",
    "make_discriminator",
    "patch_output_size",
    "perplexity",
    "reconstruction_loss",
    "save_diffusers_autoencoder",
]
