"""Which autoencoder a diffusion backbone was trained on.

A backbone learns the latents of one autoencoder; decoding its samples with another gives wrong images
without any error. Each saved backbone folder (`RUN/unet/`, `RUN/dit/` and the `model/` of every trainer
checkpoint) therefore holds `autoencoder_hash.json` with the `Autoencoder.hash()` of the autoencoder it
was trained on, written in the same atomic step as its weights, and loading a pair checks it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from latentdiff.io.checkpoint import CheckpointError, read_json

log = logging.getLogger(__name__)

RECORD_FILE = "autoencoder_hash.json"


def autoencoder_record(autoencoder_hash: str) -> dict[str, Any]:
    """The content of `RECORD_FILE` for a backbone trained on the autoencoder with this hash."""
    return {"autoencoder_hash": autoencoder_hash}


def recorded_autoencoder_hash(backbone_folder: str | Path) -> str | None:
    """The hash recorded in `backbone_folder`, None for a folder saved before backbones recorded it."""
    path = Path(backbone_folder) / RECORD_FILE
    if not path.is_file():
        return None
    record = read_json(path)
    value = record.get("autoencoder_hash") if isinstance(record, dict) else None
    if not isinstance(value, str) or not value:
        raise CheckpointError(f'{path}: expected {{"autoencoder_hash": "<sha256>"}}, got {record!r}')
    return value


def check_autoencoder_pair(
    backbone_folder: str | Path, autoencoder_folder: str | Path, autoencoder_hash: str, remedy: str
) -> None:
    """Raise `CheckpointError` naming both folders when the backbone was trained on another autoencoder;
    a backbone without a record (an older run) passes with a logged warning. `remedy` ends the message."""
    backbone_folder, autoencoder_folder = Path(backbone_folder), Path(autoencoder_folder)
    recorded = recorded_autoencoder_hash(backbone_folder)
    if recorded is None:
        log.warning(
            "%s does not record which autoencoder it was trained on (saved by an older latentdiff): "
            "cannot check that %s is that autoencoder",
            backbone_folder,
            autoencoder_folder,
        )
        return
    if recorded != autoencoder_hash:
        raise CheckpointError(
            f"{backbone_folder} was trained on another autoencoder than {autoencoder_folder} (hash "
            f"{recorded[:12]}… recorded in {backbone_folder / RECORD_FILE}, {autoencoder_folder} has "
            f"{autoencoder_hash[:12]}…): its latents would be decoded wrongly. {remedy}"
        )
