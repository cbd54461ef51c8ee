"""The tiny U-Net configuration shared by the U-Net and diffusers-format tests."""

from __future__ import annotations

from latentdiff.nets import UNetConfig


def tiny_unet_config(**overrides) -> UNetConfig:
    """Two levels, attention at the second, 8×8 inputs: fast, yet every block kind is present."""
    kw = dict(
        in_channels=4,
        out_channels=4,
        sample_size=8,
        base_channels=32,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_levels=(1,),
        head_channels=16,
        groups=8,
    )
    return UNetConfig(**{**kw, **overrides})
