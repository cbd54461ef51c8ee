"""The rules a run folder keeps before a stage writes to it.

- Nothing trained is replaced without being asked: a stage whose folder holds trained weights, or whose
  `trainer_state/<stage>/` holds checkpoints, starts from scratch only with `overwrite` (which then deletes
  them, so no checkpoint of the old run outlives it and a later resume continues the new one) and
  continues only with `resume`.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from latentdiff.io.autoencoder_record import check_autoencoder_pair
from latentdiff.io.checkpoint import CONFIG_FILE, MODEL_FILE, CheckpointError, read_json
from latentdiff.training import trainer_state as ckpt

log = logging.getLogger(__name__)


class RunFolderError(RuntimeError):
    """The run folder does not allow what was asked; the message names the folder and the way out."""


def has_trained_weights(model_folder: Path) -> bool:
    """True when `model_folder` holds weights that took training (the identity autoencoder holds none)."""
    if not (model_folder / MODEL_FILE).is_file():
        return False
    try:
        config = read_json(model_folder / CONFIG_FILE)
    except CheckpointError:
        return True
    return not (isinstance(config, dict) and config.get("kind") == "identity")


def plan_start(run_dir: Path, stage: str, model_folder: Path, resume: bool, overwrite: bool) -> bool:
    """Decide how the stage `stage` (its trainer name: `autoencoder`, `unet`, `dit`) may start in `run_dir`.

    Returns True when it starts from scratch over earlier work that `clear_stage` must delete first (only
    with `overwrite`); False when nothing is in the way or a resume continues the latest checkpoint.
    Raises `RunFolderError` when starting would replace trained work that was not given up.
    """
    if resume and overwrite:
        raise ValueError("--resume continues the run in the folder, --overwrite replaces it: choose one")
    root = ckpt.checkpoint_root(run_dir, stage)
    checkpoints = ckpt.list_checkpoints(root)
    if resume and checkpoints:
        return False
    trained = has_trained_weights(model_folder)
    if not trained and not checkpoints:
        return False
    if overwrite:
        return True
    if resume:
        raise RunFolderError(
            f"--resume: {root} holds no checkpoint to continue from, but {model_folder} holds trained "
            f"weights; pass --overwrite instead to train a new {stage} from scratch in their place"
        )
    held = f"{model_folder} holds a trained {stage}" if trained else f"{root} holds checkpoints of a run"
    raise RunFolderError(
        f"{held}: pass --resume to continue that training, or --overwrite to start a new one from scratch "
        "(its weights and checkpoints are then deleted)"
    )


def clear_stage(run_dir: Path, stage: str, model_folder: Path) -> None:
    """Delete what an earlier run of `stage` left (model folder, checkpoints, TensorBoard logs): the start
    of a new run from scratch with `overwrite`. Call on rank 0 after every check has passed."""
    for path in (model_folder, ckpt.checkpoint_root(run_dir, stage), run_dir / "logs" / stage):
        if path.exists():
            shutil.rmtree(path)
            log.warning("--overwrite: deleted %s of the earlier run", path)


def check_resume_autoencoder(run_dir: Path, stage: str, autoencoder: Path, autoencoder_hash: str) -> None:
    """Before a Stage 2 resume touches anything (latents included): its latest checkpoint must have been
    trained on this autoencoder (`io.autoencoder_record`; a checkpoint without the record passes with a
    warning)."""
    latest = ckpt.latest_checkpoint(ckpt.checkpoint_root(run_dir, stage))
    if latest is not None:
        remedy = "Resume with the autoencoder it was trained on, or start again with --overwrite"
        check_autoencoder_pair(latest / "model", autoencoder, autoencoder_hash, remedy)
