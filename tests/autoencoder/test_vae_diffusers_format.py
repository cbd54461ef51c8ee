"""diffusers AutoencoderKL folders: ours loads theirs and theirs loads ours, with the same outputs."""

import json
import logging

import pytest
import torch
from safetensors.torch import load_file, save_file
from suite_device import TEST_DEVICE, oracle_tolerance

from latentdiff.autoencoder import (
    Autoencoder,
    AutoencoderConfig,
    DiffusersFormatError,
    load_diffusers_autoencoder,
    save_diffusers_autoencoder,
)
from latentdiff.io.checkpoint import CheckpointError

diffusers = pytest.importorskip("diffusers")
logging.getLogger("diffusers").setLevel(logging.ERROR)

SMALL = [
    dict(in_channels=3, layers_per_block=1, norm_num_groups=32, mid_block_add_attention=True),
    dict(in_channels=1, layers_per_block=2, norm_num_groups=8, mid_block_add_attention=True),
    dict(in_channels=3, layers_per_block=1, norm_num_groups=8, mid_block_add_attention=False),
]


def diffusers_vae(**kw):
    torch.manual_seed(0)
    channels = kw["in_channels"]
    vae = diffusers.AutoencoderKL(
        in_channels=channels,
        out_channels=channels,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(32, 64),
        latent_channels=4,
        sample_size=16,
        **{k: v for k, v in kw.items() if k != "in_channels"},
    )
    # random init leaves GroupNorm at the identity; perturb every tensor so the comparison sees them all
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return vae.eval()


def assert_same_outputs(vae, ours, channels):
    """Both models on the test device (moved there in place), inputs drawn on the CPU and moved."""
    device = torch.device(TEST_DEVICE)
    vae.to(device)
    ours.to(device)
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(2, channels, 16, 16, generator=g) * 2 - 1).to(device)
    z = torch.randn(2, 4, 8, 8, generator=g).to(device)
    with torch.no_grad():
        theirs_post = vae.encode(x).latent_dist
        our_post = ours.encode(x)
        tol = oracle_tolerance(device, atol=1e-5)
        torch.testing.assert_close(our_post.mean, theirs_post.mean, **tol)
        std_tol = oracle_tolerance(device, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(our_post.std, theirs_post.std, **std_tol)
        torch.testing.assert_close(ours.decode(z), vae.decode(z).sample, **tol)


@pytest.mark.parametrize("kw", SMALL)
def test_diffusers_folder_loads_with_the_same_outputs(kw, tmp_path):
    vae = diffusers_vae(**kw)
    vae.save_pretrained(tmp_path, safe_serialization=True)
    ours = load_diffusers_autoencoder(tmp_path).eval()
    assert ours.config.in_channels == kw["in_channels"]
    assert ours.config.scale_factor == vae.config.scaling_factor
    assert_same_outputs(vae, ours, kw["in_channels"])


@pytest.mark.parametrize("kw", SMALL[:2])
def test_our_export_loads_into_diffusers_with_the_same_outputs(kw, tmp_path):
    vae = diffusers_vae(**kw)
    vae.save_pretrained(tmp_path / "src", safe_serialization=True)
    ours = load_diffusers_autoencoder(tmp_path / "src").eval()
    ours.config.scale_factor, ours.config.shift_factor = 0.3, 0.1
    save_diffusers_autoencoder(ours, tmp_path / "out")
    back = diffusers.AutoencoderKL.from_pretrained(tmp_path / "out").eval()
    assert back.config.scaling_factor == 0.3 and back.config.shift_factor == 0.1
    assert_same_outputs(back, ours, kw["in_channels"])


def test_our_own_model_exports_and_reimports_identically(tmp_path):
    torch.manual_seed(0)
    ours = Autoencoder(
        AutoencoderConfig.kl(f=4, latent_channels=4, base_channels=8, groups=4, num_res_blocks=1)
    )
    ours.config.scale_factor, ours.config.shift_factor = [0.5, 1.0, 2.0, 4.0], [0.0, 0.1, 0.2, 0.3]
    save_diffusers_autoencoder(ours, tmp_path)
    back = load_diffusers_autoencoder(tmp_path)
    for key, value in ours.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    torch.testing.assert_close(back.config.scale_factor, ours.config.scale_factor)
    assert back.config.shift_factor == ours.config.shift_factor


def test_old_attention_key_names_are_renamed(tmp_path):
    vae = diffusers_vae(**SMALL[0])
    vae.save_pretrained(tmp_path, safe_serialization=True)
    weights = tmp_path / "diffusion_pytorch_model.safetensors"
    old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    state = {}
    for key, value in load_file(weights).items():
        for new_name, old_name in old.items():
            key = key.replace(f".{new_name}.", f".{old_name}.")
        # the oldest checkpoints stored the projections as 1×1 convolutions
        state[key] = value[:, :, None, None] if key.endswith(("query.weight", "proj_attn.weight")) else value
    assert any(".query." in k for k in state)
    save_file(state, weights)
    assert_same_outputs(vae, load_diffusers_autoencoder(tmp_path).eval(), 3)


def test_absent_quant_convs_become_identities(tmp_path):
    vae = diffusers_vae(**SMALL[0], use_quant_conv=False, use_post_quant_conv=False)
    vae.save_pretrained(tmp_path, safe_serialization=True)
    assert_same_outputs(vae, load_diffusers_autoencoder(tmp_path).eval(), 3)


def test_pickled_weights_are_refused(tmp_path):
    diffusers_vae(**SMALL[0]).save_pretrained(tmp_path, safe_serialization=True)
    (tmp_path / "diffusion_pytorch_model.safetensors").rename(tmp_path / "diffusion_pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickle"):
        load_diffusers_autoencoder(tmp_path)


@pytest.mark.parametrize(
    ("field", "fields"),
    [
        ("down_block_types", {"down_block_types": ["AttnDownEncoderBlock2D", "DownEncoderBlock2D"]}),
        ("act_fn", {"act_fn": "gelu"}),
        ("block_out_channels", {"block_out_channels": [32, 48]}),
        ("_class_name", {"_class_name": "VQModel"}),
        ("norm_num_groups", {"norm_num_groups": 24}),
        ("out_channels", {"out_channels": 1}),
        ("in_channels", {"in_channels": 4, "out_channels": 4}),
    ],
)
def test_configs_that_do_not_map_name_the_field(field, fields, tmp_path):
    config = {"_class_name": "AutoencoderKL", "block_out_channels": [32, 64], **fields}
    config.setdefault("down_block_types", ["DownEncoderBlock2D"] * len(config["block_out_channels"]))
    config.setdefault("up_block_types", ["UpDecoderBlock2D"] * len(config["block_out_channels"]))
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file({}, tmp_path / "diffusion_pytorch_model.safetensors")
    with pytest.raises(DiffusersFormatError, match=f"field '{field}'"):
        load_diffusers_autoencoder(tmp_path)
