"""Export to / import from diffusers' UNet2DModel: same function, diffusers is the oracle."""

import json

import pytest
import torch
from diffusers import UNet2DModel
from suite_device import TEST_DEVICE, oracle_tolerance
from unet_configs import tiny_unet_config

from latentdiff.io.checkpoint import CheckpointError
from latentdiff.nets import UNet, load_diffusers_unet, save_diffusers_unet, unet_to_diffusers
from latentdiff.nets.unet_diffusers_format import (
    DiffusersFormatError,
    config_from_diffusers,
    diffusers_config,
)

ATOL = 1e-5
TIMESTEPS = [0.0, 0.5, 17.25, 999.0]


def _randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Random values everywhere (norm affines and biases included) so that every weight shapes the output;
    weights scaled by 1/sqrt(fan-in) keep activations O(1), which keeps the 1e-5 bar meaningful."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.ndim > 1:
                p.copy_(noise / p[0].numel() ** 0.5)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * noise)
            else:
                p.copy_(0.2 * noise)


def _compare(ours: UNet, theirs: UNet2DModel, num_classes: int) -> None:
    """Both models on the test device (moved there in place), inputs drawn on the CPU and moved."""
    device = torch.device(TEST_DEVICE)
    ours.to(device)
    theirs.to(device)
    x = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1)).to(device)
    labels = torch.tensor([0, num_classes - 1, num_classes]).to(device) if num_classes else None
    with torch.no_grad():
        for t in TIMESTEPS:
            tt = torch.full((3,), t, device=device)  # a tensor: diffusers truncates python floats to integers
            expected = theirs(x, tt, class_labels=labels).sample
            got = ours(x, tt, None if labels is None else {"class": labels})
            torch.testing.assert_close(got, expected, **oracle_tolerance(device, atol=ATOL))


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"num_classes": 5},
        {"num_classes": 3, "scale_shift": False, "mid_attention": False, "num_res_blocks": 2},
        {"channel_mult": (2, 3), "attention_levels": (0, 1), "num_heads": 1, "head_channels": None},
    ],
    ids=["uncond", "class-cond", "default-norm-no-mid-attn", "mult2-single-head"],
)
def test_exported_unet_matches_diffusers(tmp_path, overrides):
    cfg = tiny_unet_config(**overrides)
    ours = UNet(cfg).eval()
    _randomize(ours)
    save_diffusers_unet(ours, tmp_path / "unet")
    theirs = UNet2DModel.from_pretrained(tmp_path / "unet").eval()
    assert sum(p.numel() for p in theirs.parameters()) == sum(p.numel() for p in ours.parameters())
    _compare(ours, theirs, cfg.num_classes)


@pytest.mark.parametrize(
    "dconf",
    [
        dict(
            block_out_channels=(32, 64),
            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=16,
            norm_num_groups=8,
            layers_per_block=1,
        ),
        dict(
            block_out_channels=(32, 32, 64),
            down_block_types=("AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D"),
            attention_head_dim=None,
            norm_num_groups=8,
            layers_per_block=1,
            resnet_time_scale_shift="scale_shift",
            attn_norm_num_groups=8,
            num_class_embeds=4,
            norm_eps=1e-6,
        ),
    ],
    ids=["diffusers-defaults", "scale-shift-class-cond"],
)
def test_diffusers_unet_imports_exactly(tmp_path, dconf):
    torch.manual_seed(0)
    theirs = UNet2DModel(sample_size=8, in_channels=4, out_channels=4, **dconf).eval()
    _randomize(theirs, seed=3)
    theirs.save_pretrained(tmp_path / "d", safe_serialization=True)
    ours = load_diffusers_unet(tmp_path / "d")
    _compare(ours, theirs, (dconf.get("num_class_embeds") or 1) - 1)


def test_export_import_round_trip_is_bit_exact(tmp_path):
    ours = UNet(tiny_unet_config(num_classes=2)).eval()
    _randomize(ours)
    save_diffusers_unet(ours, tmp_path / "u")
    back = load_diffusers_unet(tmp_path / "u")
    assert back.config == ours.config
    config, state = unet_to_diffusers(ours)
    assert json.loads((tmp_path / "u" / "config.json").read_text()) == json.loads(json.dumps(config))
    for k, v in back.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_num_heads_with_unequal_widths_is_not_exportable():
    cfg = tiny_unet_config(attention_levels=(0, 1), head_channels=None, num_heads=2)
    with pytest.raises(DiffusersFormatError, match="num_heads"):
        diffusers_config(cfg)
    # equal widths map onto one attention_head_dim
    assert (
        diffusers_config(tiny_unet_config(attention_levels=(1,), head_channels=None, num_heads=4))[
            "attention_head_dim"
        ]
        == 16
    )


@pytest.mark.parametrize(
    "field,value",
    [
        ("center_input_sample", True),
        ("down_block_types", ["ResnetDownsampleBlock2D", "AttnDownBlock2D"]),
        ("up_block_types", ["UpBlock2D", "AttnUpBlock2D"]),
        ("attn_norm_num_groups", None),
        ("time_embedding_type", "fourier"),
        ("num_class_embeds", 1),
    ],
)
def test_unmappable_diffusers_config_names_the_field(field, value):
    dconf = diffusers_config(tiny_unet_config())
    dconf[field] = value
    with pytest.raises(DiffusersFormatError, match=field):
        config_from_diffusers(dconf)


def test_pickle_only_folder_is_refused(tmp_path):
    folder = tmp_path / "legacy"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(diffusers_config(tiny_unet_config())))
    (folder / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(CheckpointError, match="pickle"):
        load_diffusers_unet(folder)
