"""Read and write diffusers `AutoencoderKL` folders (`config.json` + `diffusion_pytorch_model.safetensors`)
without importing diffusers.

Our `Autoencoder(kind="kl")` uses diffusers' module names, so weights map one to one; only the attention
projections of older checkpoints (`query`/`key`/`value`/`proj_attn`, sometimes stored as 1×1 convolutions)
are renamed. Latent scaling carries over: diffusers' `scaling_factor`/`shift_factor` are our
`scale_factor`/`shift_factor` (diffusion latent = (z − shift)·scale); per-channel `latents_mean` /
`latents_std` become shift = mean, scale = scaling_factor / std.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from latentdiff.autoencoder.config import AutoencoderConfig
from latentdiff.autoencoder.model import Autoencoder, load_state_checked
from latentdiff.io.checkpoint import (
    DIFFUSERS_WEIGHTS,
    CheckpointError,
    atomic_dir,
    diffusers_weights_file,
    load_tensors,
    read_json,
    refuse_pickle,
    save_tensors,
    write_json,
)

log = logging.getLogger(__name__)

# fields of AutoencoderKL's config that carry no architecture (or that we read separately)
_INFORMATIONAL = {"force_upcast", "sample_size"}
_HANDLED = {
    "in_channels",
    "out_channels",
    "down_block_types",
    "up_block_types",
    "block_out_channels",
    "layers_per_block",
    "act_fn",
    "latent_channels",
    "norm_num_groups",
    "scaling_factor",
    "shift_factor",
    "latents_mean",
    "latents_std",
    "use_quant_conv",
    "use_post_quant_conv",
    "mid_block_add_attention",
}

# our config field → the AutoencoderKL field it comes from, for error messages
_DIFFUSERS_NAME = {
    "groups": "norm_num_groups",
    "num_res_blocks": "layers_per_block",
    "base_channels": "block_out_channels",
    "channel_mult": "block_out_channels",
    "mid_attention": "mid_block_add_attention",
    "scale_factor": "scaling_factor",
}

_OLD_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_OLD_ATTENTION_KEY = re.compile(r"^(.*\.attentions\.\d+\.)(query|key|value|proj_attn)\.(weight|bias)$")


class DiffusersFormatError(CheckpointError):
    """A diffusers folder whose config or weights do not map onto our autoencoder; names the field."""


def _field_error(source: Path, key: str, value: Any, why: str) -> DiffusersFormatError:
    return DiffusersFormatError(f"{source}: field '{key}' = {value!r} cannot be loaded: {why}")


def config_from_diffusers(raw: dict[str, Any], source: Path = Path("config.json")) -> AutoencoderConfig:
    """Map an `AutoencoderKL` config dict onto `AutoencoderConfig`; anything that does not map raises
    `DiffusersFormatError` naming the field."""
    cls_name = raw.get("_class_name", "AutoencoderKL")
    if cls_name != "AutoencoderKL":
        raise _field_error(source, "_class_name", cls_name, "only AutoencoderKL folders are supported")
    unknown = sorted(k for k in raw if not k.startswith("_") and k not in _HANDLED | _INFORMATIONAL)
    if unknown:
        log.warning("%s: ignoring AutoencoderKL config fields %s", source, unknown)

    def get(key: str, default: Any) -> Any:
        return raw.get(key, default)

    in_channels = get("in_channels", 3)
    out_channels = get("out_channels", 3)
    if out_channels != in_channels:
        raise _field_error(source, "out_channels", out_channels, f"must equal in_channels ({in_channels})")
    channels = list(get("block_out_channels", [64]))
    if not channels or any(c % channels[0] for c in channels):
        raise _field_error(
            source,
            "block_out_channels",
            channels,
            "every entry must be a multiple of the first (channel_mult)",
        )
    down = list(get("down_block_types", ["DownEncoderBlock2D"]))
    up = list(get("up_block_types", ["UpDecoderBlock2D"]))
    if len(down) != len(channels) or any(t != "DownEncoderBlock2D" for t in down):
        raise _field_error(source, "down_block_types", down, f"need {len(channels)} × 'DownEncoderBlock2D'")
    if len(up) != len(channels) or any(t != "UpDecoderBlock2D" for t in up):
        raise _field_error(source, "up_block_types", up, f"need {len(channels)} × 'UpDecoderBlock2D'")
    act = get("act_fn", "silu")
    if act not in ("silu", "swish"):
        raise _field_error(source, "act_fn", act, "only SiLU is supported")
    latent_channels = get("latent_channels", 4)
    scale, shift = _scaling_from_diffusers(raw, latent_channels, source)
    sample_size = get("sample_size", 32)
    resolution = int(sample_size[0] if isinstance(sample_size, list | tuple) else sample_size)
    try:
        return AutoencoderConfig(
            kind="kl",
            in_channels=in_channels,
            resolution=resolution,
            base_channels=channels[0],
            channel_mult=tuple(c // channels[0] for c in channels),
            num_res_blocks=get("layers_per_block", 1),
            latent_channels=latent_channels,
            mid_attention=get("mid_block_add_attention", True),
            groups=get("norm_num_groups", 32),
            double_z=True,
            scale_factor=scale,
            shift_factor=shift,
        )
    except ValueError as e:
        ours = str(e).split("=", 1)[0].removeprefix("autoencoder.")
        theirs = _DIFFUSERS_NAME.get(ours, ours)
        raise DiffusersFormatError(f"{source}: field '{theirs}' cannot be loaded: {e}") from e


def _scaling_from_diffusers(
    raw: dict[str, Any], latent_channels: int, source: Path
) -> tuple[float | list[float], float | list[float]]:
    scaling = float(raw.get("scaling_factor", 0.18215))
    shift = raw.get("shift_factor")
    mean, std = raw.get("latents_mean"), raw.get("latents_std")
    if mean is None and std is None:
        return scaling, 0.0 if shift is None else float(shift)
    if shift not in (None, 0, 0.0):
        raise _field_error(source, "shift_factor", shift, "cannot be combined with latents_mean/latents_std")
    mean = [0.0] * latent_channels if mean is None else [float(v) for v in mean]
    std = [1.0] * latent_channels if std is None else [float(v) for v in std]
    for key, values in (("latents_mean", mean), ("latents_std", std)):
        if len(values) != latent_channels:
            raise _field_error(
                source, key, values, f"needs {latent_channels} values (one per latent channel)"
            )
    return [scaling / s for s in std], mean


def state_from_diffusers(
    state: dict[str, torch.Tensor], raw_config: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """Rename old attention keys and fill absent quant convs (`use_quant_conv=False`) with identities."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = _OLD_ATTENTION_KEY.match(key)
        if match:
            prefix, name, kind = match.groups()
            key = f"{prefix}{_OLD_ATTENTION_NAMES[name]}.{kind}"
        if (
            ".attentions." in key
            and key.endswith(".weight")
            and value.ndim == 4
            and value.shape[2:] == (1, 1)
        ):
            value = value[:, :, 0, 0]  # 1×1 conv → linear
        out[key] = value
    latent = raw_config.get("latent_channels", 4)
    for name, flag, channels in (
        ("quant_conv", "use_quant_conv", 2 * latent),
        ("post_quant_conv", "use_post_quant_conv", latent),
    ):
        if not raw_config.get(flag, True):
            # a 1×1 conv with identity weights and zero bias computes exactly its input
            out[f"{name}.weight"] = torch.eye(channels)[:, :, None, None]
            out[f"{name}.bias"] = torch.zeros(channels)
    return out


def load_diffusers_autoencoder(path: str | Path) -> Autoencoder:
    """Load a diffusers `AutoencoderKL` folder (safetensors only; pickled `.bin` weights are refused)."""
    path = Path(path)
    if path.is_file():
        refuse_pickle(path)
        raise DiffusersFormatError(f"{path}: expected a diffusers AutoencoderKL folder, got a file")
    weights = diffusers_weights_file(path)
    raw = read_json(path / "config.json")
    config = config_from_diffusers(raw, path / "config.json")
    model = Autoencoder(config)
    load_state_checked(model, state_from_diffusers(load_tensors(weights), raw), weights)
    return model


def diffusers_config(autoencoder: Autoencoder) -> dict[str, Any]:
    """The `AutoencoderKL` config dict equivalent to `autoencoder` (KL kind with double_z only)."""
    cfg = autoencoder.config
    if cfg.kind != "kl":
        raise ValueError(
            f"only a 'kl' autoencoder maps onto diffusers' AutoencoderKL, this one is '{cfg.kind}'"
        )
    if not cfg.double_z:
        raise ValueError(
            "autoencoder.double_z=False has no AutoencoderKL equivalent (it always predicts a variance)"
        )
    levels = len(cfg.channel_mult)
    scale, shift = cfg.scale_factor, cfg.shift_factor
    out: dict[str, Any] = {
        "_class_name": "AutoencoderKL",
        "in_channels": cfg.in_channels,
        "out_channels": cfg.in_channels,
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "block_out_channels": list(cfg.block_channels),
        "layers_per_block": cfg.num_res_blocks,
        "act_fn": "silu",
        "latent_channels": cfg.latent_channels,
        "norm_num_groups": cfg.groups,
        "sample_size": cfg.resolution,
        "mid_block_add_attention": cfg.mid_attention,
        "use_quant_conv": True,
        "use_post_quant_conv": True,
        "force_upcast": True,
    }
    if isinstance(scale, list) or isinstance(shift, list):
        # (z − mean)·scaling/std with scaling = 1 reproduces per-channel (z − shift)·scale
        c = cfg.latent_channels
        scales = scale if isinstance(scale, list) else [scale] * c
        shifts = shift if isinstance(shift, list) else [shift] * c
        out.update(
            scaling_factor=1.0,
            shift_factor=None,
            latents_mean=list(shifts),
            latents_std=[1.0 / s for s in scales],
        )
    else:
        out.update(scaling_factor=scale, shift_factor=shift if shift != 0.0 else None)
    return out


def save_diffusers_autoencoder(autoencoder: Autoencoder, path: str | Path) -> Path:
    """Write a folder that `diffusers.AutoencoderKL.from_pretrained` loads (atomically)."""
    config = diffusers_config(autoencoder)
    with atomic_dir(path) as tmp:
        write_json(config, tmp / "config.json")
        save_tensors(autoencoder.state_dict(), tmp / DIFFUSERS_WEIGHTS)
    return Path(path)
