"""Export to and import from diffusers' `UNet2DModel` folder format, without importing diffusers (a
text-conditioned U-Net: `UNet2DConditionModel`, `nets.unet_condition_diffusers_format`).

A diffusers folder holds `config.json` (the `UNet2DModel.__init__` arguments) and
`diffusion_pytorch_model.safetensors`. Our module tree mirrors `UNet2DModel`'s, so weights keep their
names; only the configuration is translated. A diffusers configuration that our U-Net cannot express
raises `DiffusersFormatError` naming the field.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from latentdiff.io.checkpoint import (
    diffusers_weights_file,
    load_tensors,
    read_json,
    save_diffusers_folder,
)
from latentdiff.io.model_folder import load_weights
from latentdiff.nets.unet import UNet, UNetConfig

log = logging.getLogger(__name__)

DIFFUSERS_VERSION = "0.42.1"  # the diffusers release whose UNet2DModel this format was checked against

# UNet2DModel.__init__ defaults, for keys a config.json leaves out
_DEFAULTS: dict[str, Any] = {
    "sample_size": None,
    "in_channels": 3,
    "out_channels": 3,
    "center_input_sample": False,
    "time_embedding_type": "positional",
    "time_embedding_dim": None,
    "freq_shift": 0,
    "flip_sin_to_cos": True,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    "mid_block_type": "UNetMidBlock2D",
    "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [224, 448, 672, 896],
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "downsample_padding": 1,
    "downsample_type": "conv",
    "upsample_type": "conv",
    "dropout": 0.0,
    "act_fn": "silu",
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "attn_norm_num_groups": None,
    "norm_eps": 1e-5,
    "resnet_time_scale_shift": "default",
    "add_attention": True,
    "class_embed_type": None,
    "num_class_embeds": None,
    "num_train_timesteps": None,
}

# fields our U-Net supports with one value only
_FIXED: dict[str, tuple[Any, ...]] = {
    "center_input_sample": (False,),
    "time_embedding_type": ("positional",),
    "mid_block_type": ("UNetMidBlock2D",),
    "mid_block_scale_factor": (1,),
    "downsample_padding": (1,),
    "downsample_type": ("conv",),
    "upsample_type": ("conv",),
    "act_fn": ("silu", "swish"),
    "class_embed_type": (None,),
    "resnet_time_scale_shift": ("default", "scale_shift"),
}


class DiffusersFormatError(ValueError):
    """A diffusers configuration or folder cannot be expressed by (or written from) our backbones."""


def _attention_head_dim(cfg: UNetConfig) -> int | None:
    if cfg.head_channels is not None:
        return cfg.head_channels
    if cfg.num_heads in (None, 1):
        return None  # diffusers: one head of all channels in every attention layer
    widths = set(cfg.attention_channels)
    if len(widths) > 1:
        raise DiffusersFormatError(
            f"num_heads={cfg.num_heads} gives a different head size per level {sorted(widths)}; "
            "UNet2DModel has one attention_head_dim for all layers: use head_channels instead"
        )
    return widths.pop() // cfg.num_heads if widths else None


def diffusers_config(cfg: UNetConfig) -> dict[str, Any]:
    """The `UNet2DModel` config.json equivalent of `cfg` (`UNet2DConditionModel` for a text U-Net)."""
    if cfg.cross_attention_dim is not None:
        from latentdiff.nets.unet_condition_diffusers_format import condition_diffusers_config

        return condition_diffusers_config(cfg, DIFFUSERS_VERSION)
    levels = range(len(cfg.channel_mult))
    attn = set(cfg.attention_levels)
    freq_shift = int(cfg.freq_shift) if float(cfg.freq_shift).is_integer() else cfg.freq_shift
    return {
        "_class_name": "UNet2DModel",
        "_diffusers_version": DIFFUSERS_VERSION,
        "sample_size": cfg.sample_size,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "center_input_sample": False,
        "time_embedding_type": "positional",
        "time_embedding_dim": cfg.temb_channels,
        "freq_shift": freq_shift,
        "flip_sin_to_cos": cfg.flip_sin_to_cos,
        "down_block_types": ["AttnDownBlock2D" if i in attn else "DownBlock2D" for i in levels],
        "mid_block_type": "UNetMidBlock2D",
        "up_block_types": ["AttnUpBlock2D" if i in attn else "UpBlock2D" for i in reversed(levels)],
        "block_out_channels": list(cfg.level_channels),
        "layers_per_block": cfg.num_res_blocks,
        "mid_block_scale_factor": 1,
        "downsample_padding": 1,
        "downsample_type": "conv",
        "upsample_type": "conv",
        "dropout": cfg.dropout,
        "act_fn": "silu",
        "attention_head_dim": _attention_head_dim(cfg),
        "norm_num_groups": cfg.groups,
        # without it, a scale-shift UNet2DModel builds its middle attention with no GroupNorm
        "attn_norm_num_groups": cfg.groups,
        "norm_eps": cfg.eps,
        "resnet_time_scale_shift": "scale_shift" if cfg.scale_shift else "default",
        "add_attention": cfg.mid_attention,
        "class_embed_type": None,
        "num_class_embeds": cfg.num_classes + 1 if cfg.num_classes > 0 else None,
        "num_train_timesteps": None,
    }


def config_from_diffusers(dconf: dict[str, Any], where: str = "config.json") -> UNetConfig:
    """`UNetConfig` of a `UNet2DModel` (or `UNet2DConditionModel`) config.json; an unsupported value raises
    naming its field."""
    if dconf.get("_class_name") == "UNet2DConditionModel":
        from latentdiff.nets.unet_condition_diffusers_format import config_from_condition_diffusers

        return config_from_condition_diffusers(dconf, where)

    def fail(field: str, why: str) -> DiffusersFormatError:
        return DiffusersFormatError(f"{where}: {field}={c.get(field)!r}: {why}")

    if dconf.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise DiffusersFormatError(f"{where}: _class_name={dconf['_class_name']!r}, expected 'UNet2DModel'")
    unknown = sorted(k for k in dconf if k not in _DEFAULTS and not k.startswith("_"))
    if unknown:
        log.warning("%s: ignoring UNet2DModel config keys unknown to this format: %s", where, unknown)
    c = {**_DEFAULTS, **{k: v for k, v in dconf.items() if k in _DEFAULTS}}
    for field, allowed in _FIXED.items():
        if c[field] not in allowed:
            raise fail(field, f"only {list(allowed)} can be expressed by latentdiff's UNet")

    chans = list(c["block_out_channels"])
    down, up = list(c["down_block_types"]), list(c["up_block_types"])
    if len(down) != len(chans):
        raise fail("down_block_types", f"needs one entry per block_out_channels ({len(chans)})")
    for name in down:
        if name not in ("DownBlock2D", "AttnDownBlock2D"):
            raise fail("down_block_types", f"{name!r} is not DownBlock2D or AttnDownBlock2D")
    attention_levels = tuple(i for i, name in enumerate(down) if name == "AttnDownBlock2D")
    mirrored = ["AttnUpBlock2D" if i in attention_levels else "UpBlock2D" for i in reversed(range(len(down)))]
    if up != mirrored:
        raise fail("up_block_types", f"must mirror down_block_types, i.e. {mirrored}")

    temb = c["time_embedding_dim"]
    if temb is None:
        base = chans[0]
    elif temb % 4 == 0:
        base = temb // 4
    else:
        raise fail("time_embedding_dim", "must be 4 × the base channel count")
    if any(ch % base for ch in chans):
        field = "time_embedding_dim" if temb is not None else "block_out_channels"
        raise fail(field, f"every block width must be a multiple of the base width {base}")

    groups = c["norm_num_groups"]
    attn_groups = c["attn_norm_num_groups"]
    if c["add_attention"] and attn_groups is None and c["resnet_time_scale_shift"] == "scale_shift":
        raise fail("attn_norm_num_groups", "a middle attention without GroupNorm cannot be expressed")
    if attn_groups is not None and attn_groups != groups:
        raise fail("attn_norm_num_groups", f"must equal norm_num_groups ({groups})")

    num_class_embeds = c["num_class_embeds"]
    if num_class_embeds is not None and num_class_embeds < 2:
        raise fail("num_class_embeds", "must be num_classes + 1 (the last index is the null class), so >= 2")

    size = c["sample_size"]
    if isinstance(size, list | tuple):
        if len(set(size)) != 1:
            raise fail("sample_size", "only square samples can be expressed")
        size = size[0]
    levels = len(chans)
    if size is None:
        size = 2 ** (levels - 1)

    head_dim = c["attention_head_dim"]
    try:
        return UNetConfig(
            in_channels=c["in_channels"],
            out_channels=c["out_channels"],
            sample_size=int(size),
            base_channels=base,
            channel_mult=tuple(ch // base for ch in chans),
            num_res_blocks=c["layers_per_block"],
            attention_levels=attention_levels,
            mid_attention=bool(c["add_attention"]),
            head_channels=head_dim,
            num_heads=None,
            dropout=float(c["dropout"]),
            groups=groups,
            eps=float(c["norm_eps"]),
            num_classes=num_class_embeds - 1 if num_class_embeds else 0,
            scale_shift=c["resnet_time_scale_shift"] == "scale_shift",
            flip_sin_to_cos=bool(c["flip_sin_to_cos"]),
            freq_shift=float(c["freq_shift"]),
        )
    except ValueError as e:
        raise DiffusersFormatError(f"{where}: {e}") from e


def unet_to_diffusers(unet: UNet) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config dict, state dict) of the equivalent `UNet2DModel`; tensors are contiguous CPU copies."""
    config = diffusers_config(unet.config)
    state = {k: v.detach().to("cpu").contiguous() for k, v in unet.state_dict().items()}
    return config, state


def save_diffusers_unet(unet: UNet, path: str | Path) -> Path:
    """Write a folder that `diffusers.UNet2DModel.from_pretrained(path)` (a text U-Net:
    `UNet2DConditionModel`) loads (atomically)."""
    return save_diffusers_folder(*unet_to_diffusers(unet), path)


def load_diffusers_unet(path: str | Path) -> UNet:
    """Build our U-Net from a diffusers `UNet2DModel` folder (safetensors only; eval mode)."""
    path = Path(path)
    dconf = read_json(path / "config.json")
    cfg = config_from_diffusers(dconf, where=str(path / "config.json"))
    weights = diffusers_weights_file(path)
    state = load_tensors(weights)
    model = UNet(cfg)
    load_weights(model, state, str(weights))
    return model.eval()
