"""Neural networks used by the stages: the diffusion U-Net and the blocks it shares with the autoencoder."""

from latentdiff.nets.blocks import Downsample, ResBlock, SelfAttention, Upsample, timestep_embedding
from latentdiff.nets.unet import UNet, UNetConfig
from latentdiff.nets.unet_diffusers_format import (
    DiffusersFormatError,
    load_diffusers_unet,
    save_diffusers_unet,
    unet_to_diffusers,
)

__all__ = [
    "DiffusersFormatError",
    "Downsample",
    "ResBlock",
    "SelfAttention",
    "UNet",
    "UNetConfig",
    "Upsample",
    "load_diffusers_unet",
    "save_diffusers_unet",
    "timestep_embedding",
    "unet_to_diffusers",
]
