"""The rules a run folder keeps before a stage writes to it.

- Nothing trained is replaced without being asked: a stage whose folder holds trained weights, or whose
  `trainer_state/<stage>/` holds checkpoints, starts from scratch only with `overwrite` (which then deletes
  them, so no checkpoint of the old run outlives it and a later resume continues the new one) and
  continues only with `resume`.
- A refused command changes nothing: every check here only reads, and the stages call them all before
  writing `config.yaml` or anything else.
- A changed model configuration on resume is refused naming the keys that differ.
- Stage 2 refuses an autoencoder whose latent statistics were never measured.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import yaml

from latentdiff.autoencoder.config import AutoencoderConfig
from latentdiff.io.autoencoder_record import check_autoencoder_pair
from latentdiff.io.checkpoint import CONFIG_FILE, MODEL_FILE, CheckpointError, read_json
from latentdiff.training import trainer_state as ckpt
from latentdiff.training.batching import GlobalBatchSampler

log = logging.getLogger(__name__)

# set after training from data (autoencoder/stats.py): not part of what a resumed run must agree on
_MEASURED_KEYS = ("scale_factor", "shift_factor", "latent_stats_images")
_SHOWN_DIFFERENCES = 6


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


def config_differences(
    saved: dict[str, Any], current: dict[str, Any], ignore: tuple[str, ...] = ()
) -> list[str]:
    """`key: saved value → current value` for every top-level key that differs (keys in `ignore` skipped)."""
    lines = []
    for key in sorted(set(saved) | set(current)):
        if key in ignore or key in ("format", "version"):
            continue
        old, new = saved.get(key, "(absent)"), current.get(key, "(absent)")
        if old != new:
            lines.append(f"{key}: {old!r} in the checkpoint, {new!r} now")
    return lines


def check_resume_config(run_dir: Path, stage: str, current: dict[str, Any]) -> Path | None:
    """Before a resume writes anything: the latest checkpoint's model configuration must be `current`
    (the `config_dict()` of the model as configured now). Returns that checkpoint (None when there is none);
    raises `RunFolderError` listing the keys that differ."""
    latest = ckpt.latest_checkpoint(ckpt.checkpoint_root(run_dir, stage))
    if latest is None:
        return None
    config_path = latest / "model" / CONFIG_FILE
    saved = read_json(config_path)
    differences = config_differences(saved, current, ignore=_MEASURED_KEYS)
    if differences:
        shown = differences[:_SHOWN_DIFFERENCES]
        if len(differences) > len(shown):
            shown.append(f"... and {len(differences) - len(shown)} more")
        raise RunFolderError(
            f"cannot resume {run_dir}: the {stage} configured now differs from its checkpoint "
            f"({config_path}) in {len(differences)} setting(s):\n  "
            + ";\n  ".join(shown)
            + f".\nResume with the settings the run was started with (--config {run_dir / 'config.yaml'}), "
            "or start again with --overwrite"
        )
    return latest


def check_resume_autoencoder(run_dir: Path, stage: str, autoencoder: Path, autoencoder_hash: str) -> None:
    """Before a Stage 2 resume touches anything (latents included): its latest checkpoint must have been
    trained on this autoencoder (`io.autoencoder_record`; a checkpoint without the record passes with a
    warning)."""
    latest = ckpt.latest_checkpoint(ckpt.checkpoint_root(run_dir, stage))
    if latest is not None:
        remedy = "Resume with the autoencoder it was trained on, or start again with --overwrite"
        check_autoencoder_pair(latest / "model", autoencoder, autoencoder_hash, remedy)


def check_batch_fits(num_items: int, batch_size: int, seed: int) -> None:
    """One global batch must fit in the data (the sampler's own check, run before anything is written)."""
    GlobalBatchSampler(num_items, batch_size, seed)


def check_data_fits(ae: AutoencoderConfig, resolution: int, channels: int, autoencoder: str | Path) -> None:
    """Images of `resolution`² px with `channels` channels must go through the autoencoder `ae`."""
    if channels != ae.in_channels:
        raise ValueError(
            f"the data has {channels} channel(s), but the autoencoder {autoencoder} takes {ae.in_channels}: "
            f"pass --channels {ae.in_channels} (= --set data.channels={ae.in_channels})"
        )
    f = 1 if ae.kind == "identity" else 2 ** (len(ae.channel_mult) - 1)
    if resolution % f:
        fits = max(f, resolution - resolution % f)
        raise ValueError(
            f"data.resolution={resolution}: the autoencoder {autoencoder} downsamples by f={f}, so the image "
            f"side must be a multiple of {f} (e.g. --resolution {fits})"
        )


def _is(value: float | list[float], default: float) -> bool:
    return all(v == default for v in value) if isinstance(value, list | tuple) else value == default


def latent_stats_missing(ae: AutoencoderConfig) -> bool:
    """True when the latent scale and shift were neither measured (`latent_stats_images` 0) nor given
    (still 1 and 0): the state of an autoencoder whose Stage 1 stopped before `finalize_autoencoder`.
    An imported autoencoder that kept the scale factor of its source passes."""
    return ae.latent_stats_images == 0 and _is(ae.scale_factor, 1.0) and _is(ae.shift_factor, 0.0)


def check_latent_stats(ae: AutoencoderConfig, folder: Path) -> None:
    """Stage 2 refuses an autoencoder whose latent statistics were never measured, naming the command
    that measures them (resuming its Stage 1, which finishes training and then measures them)."""
    if not latent_stats_missing(ae):
        return
    run = folder.parent
    settings = run / "config.yaml"
    started = ""
    if settings.is_file():
        try:
            recorded = (yaml.safe_load(settings.read_text()) or {}).get("autoencoder_stage")
        except yaml.YAMLError:
            recorded = None
        if recorded:
            started = f" --config {settings}"
    raise RunFolderError(
        f"{folder} is an unfinished Stage 1: its latent statistics were never measured (latent_stats_images "
        f"0, scale_factor 1, in {folder / CONFIG_FILE}), so Stage 2 would train on unscaled latents: its "
        "training stopped (Ctrl-C or killed) before measuring them. Finish it with "
        f"`latentdiff train-autoencoder --out {run} --resume{started}` (the settings it was started with), "
        "then train Stage 2"
    )
