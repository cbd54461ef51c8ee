"""The backbone contract and its registry.

A backbone is an `nn.Module` with
- ``forward(x, c_noise, cond=None) -> Tensor`` shaped like x: x the preconditioned noisy latent
  (c_in·x_σ), c_noise the (B,) or scalar noise input (a timestep for VP models, ¼·ln σ for EDM), cond a
  mapping of named tensors (`nets.conditioning`);
- ``cond_keys`` (the conditioning keys it takes) and ``null_cond(cond)`` (their learned null values);
- ``config`` (a dataclass), ``config_dict()`` (what `config.json` holds, including ``"backbone": name``),
  ``save_pretrained(path, ema_state=None)`` and ``from_pretrained(path, weights="auto")``.
A new backbone is one module plus one line in `BACKBONES`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from latentdiff.config import from_dict
from latentdiff.io.checkpoint import CheckpointError, read_json
from latentdiff.nets.dit import DiT, DiTConfig
from latentdiff.nets.unet import UNet, UNetConfig

# name -> (module class, config class); the name is the `backbone` field of config.json and the folder
# the trained backbone is written to inside a run.
# a run's autoguidance guide (`latentdiff train` trains it after the backbone): a weaker backbone on the
# same latents, in a folder of the same format
GUIDE_FOLDER = "guide"
BACKBONES: dict[str, tuple[type[nn.Module], type]] = {
    "unet": (UNet, UNetConfig),
    "dit": (DiT, DiTConfig),
}


def check_backbone(name: str) -> str:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid backbones: {', '.join(BACKBONES)}")
    return name


def build_backbone(name: str, config: Any) -> nn.Module:
    """A freshly initialised backbone `name` from its config dataclass (or a dict of its fields)."""
    cls, cfg_cls = BACKBONES[check_backbone(name)]
    if isinstance(config, dict):
        config = from_dict(cfg_cls, config, f"{name}.")
    if not isinstance(config, cfg_cls):
        raise TypeError(f"backbone {name!r} takes a {cfg_cls.__name__}, got {type(config).__name__}")
    return cls(config)


def backbone_name(folder: str | Path) -> str:
    """The `backbone` field of `folder/config.json` (folders written before it existed: from `format`)."""
    config = read_json(Path(folder) / "config.json")
    name = config.get("backbone") or str(config.get("format", "")).removeprefix("latentdiff.")
    if name not in BACKBONES:
        raise CheckpointError(
            f"{Path(folder) / 'config.json'}: backbone {name!r} is not one of {', '.join(BACKBONES)}"
        )
    return name


def load_backbone(folder: str | Path, weights: str = "auto") -> nn.Module:
    """Load a trained backbone folder by the `backbone` field of its config.json (eval mode)."""
    cls, _ = BACKBONES[backbone_name(folder)]
    return cls.from_pretrained(folder, weights=weights)


def find_backbone_folder(run_dir: str | Path) -> Path | None:
    """The one backbone folder of a run (`unet/`, `dit/`, ...); None when there is none."""
    found = [Path(run_dir) / n for n in BACKBONES if (Path(run_dir) / n / "config.json").is_file()]
    if len(found) > 1:
        raise CheckpointError(
            f"{run_dir} holds several trained backbones ({', '.join(p.name for p in found)}): "
            "keep one per run folder"
        )
    return found[0] if found else None
