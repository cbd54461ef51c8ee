"""A model saved as a folder — `config.json` (format tag, version, configuration) + `model.safetensors`
(+ `ema.safetensors`) — through one pair of methods shared by the U-Net, the DiT and the text encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Self

import torch
from torch import nn

from latentdiff.config import from_dict
from latentdiff.io.checkpoint import CheckpointError, load_tagged_model_folder, save_model_folder


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """`load_state_dict(strict=True)` with an error naming the missing, unexpected or misshapen keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshapen = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or misshapen:
        raise CheckpointError(
            f"{source}: weights do not match the configuration: missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}, wrong shape {misshapen[:5]}"
        )
    model.load_state_dict(state, strict=True)


class FolderModel:
    """Mixin for an `nn.Module` built from one configuration dataclass (`self.config`) whose `config_dict()`
    is that configuration with the `folder_format`/`version` tags; the subclass names them:
    ``class UNet(FolderModel, nn.Module, folder_format=FORMAT, version=VERSION, config_class=UNetConfig)``."""

    _folder_format: ClassVar[str]
    _folder_version: ClassVar[int]
    _config_class: ClassVar[type]

    def __init_subclass__(cls, *, folder_format: str, version: int, config_class: type, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls._folder_format, cls._folder_version, cls._config_class = folder_format, version, config_class

    def config_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def save_pretrained(self, path: str | Path, ema_state: dict[str, torch.Tensor] | None = None) -> Path:
        """Write `config.json` + `model.safetensors` (+ `ema.safetensors`) atomically."""
        return save_model_folder(path, self.config_dict(), self.state_dict(), ema_state)  # type: ignore[attr-defined]

    @classmethod
    def from_pretrained(cls, path: str | Path, weights: str = "auto") -> Self:
        """Load a folder written by `save_pretrained` (EMA weights when present with "auto"); eval mode."""
        config, state = load_tagged_model_folder(path, cls._folder_format, cls._folder_version, weights)
        model = cls(from_dict(cls._config_class, config))  # type: ignore[call-arg]
        load_weights(model, state, str(path))  # type: ignore[arg-type]
        return model.eval()  # type: ignore[attr-defined]
