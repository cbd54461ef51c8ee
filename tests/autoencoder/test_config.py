"""AutoencoderConfig: presets, validation errors that name the key, YAML/JSON round trip."""

import pytest

from latentdiff.autoencoder import AutoencoderConfig
from latentdiff.config import ConfigError, from_dict, to_dict


@pytest.mark.parametrize("f", [1, 2, 4, 8, 16])
def test_presets_give_the_requested_downsample_factor(f):
    assert AutoencoderConfig.kl(f=f).downsample_factor == f
    assert AutoencoderConfig.vq(f=f).downsample_factor == f


def test_identity_is_pixel_space():
    cfg = AutoencoderConfig.identity(in_channels=1)
    assert cfg.downsample_factor == 1 and cfg.latent_dim == 1


def test_vq_latent_has_codebook_dim_channels():
    assert AutoencoderConfig.vq(latent_channels=3).latent_dim == 3
    assert AutoencoderConfig.vq(latent_channels=3, codebook_dim=8).latent_dim == 8


def test_groups_not_dividing_channels_is_a_clear_error():
    with pytest.raises(ValueError, match=r"groups.*level 0 has 48 channels"):
        AutoencoderConfig(base_channels=48, groups=32)


def test_unsupported_downsample_factor_is_a_clear_error():
    with pytest.raises(ValueError, match=r"channel_mult.*f=32"):
        AutoencoderConfig(channel_mult=(1, 1, 1, 1, 1, 1))
    with pytest.raises(ValueError, match="f=3 is not supported"):
        AutoencoderConfig.kl(f=3)


def test_identity_latent_channels_follow_the_image():
    # architecture fields do not apply to the identity: its latent is the image, whatever was written
    cfg = from_dict(AutoencoderConfig, {"kind": "identity", "in_channels": 3, "latent_channels": 4})
    assert cfg.latent_channels == cfg.latent_dim == 3


def test_bad_values_from_yaml_raise_config_error_naming_the_key():
    with pytest.raises(ConfigError, match="groups"):
        from_dict(AutoencoderConfig, {"base_channels": 16, "groups": 3})
    with pytest.raises(ConfigError, match="in_channels"):
        from_dict(AutoencoderConfig, {"in_channels": 4})
    with pytest.raises(ConfigError, match="scale_factor"):
        from_dict(AutoencoderConfig, {"latent_channels": 4, "scale_factor": [1.0, 2.0]})


def test_round_trip_through_plain_dict_keeps_every_field():
    cfg = AutoencoderConfig.kl(f=8, latent_channels=4, base_channels=32, scale_factor=[0.5, 1.0, 2.0, 4.0])
    back = from_dict(AutoencoderConfig, to_dict(cfg))
    assert back == cfg
    assert isinstance(back.channel_mult, tuple)
