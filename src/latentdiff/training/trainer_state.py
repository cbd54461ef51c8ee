"""Trainer checkpoints: `run_dir/trainer_state/<stage>/step_XXXXXXXX/`, each folder written atomically.

A checkpoint folder holds `model/` (the stage's model folder with raw and EMA weights), `extra.safetensors`
(modules trained alongside, e.g. the discriminator) and `trainer.json` + `trainer.safetensors` (step,
optimiser and scheduler states, EMA counter, RNG states), all without pickle.
"""

from __future__ import annotations

import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentdiff.io.checkpoint import (
    CheckpointError,
    atomic_dir,
    load_state,
    load_tensors,
    read_json,
    save_state,
    save_tensors,
    write_json,
)

log = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step_(\d{8})$")


def checkpoint_root(run_dir: Path, stage: str) -> Path:
    return Path(run_dir) / "trainer_state" / stage


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root`, oldest first; temporary folders of interrupted saves are skipped."""
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / "trainer.json").is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def latest_step(run_dir: Path, stage: str) -> int | None:
    """The step of a stage's latest checkpoint (its folder's name: no weights are read), None without one."""
    found = list_checkpoints(checkpoint_root(run_dir, stage))
    return found[-1][0] if found else None


SNAPSHOT_FILE = "snapshot.json"  # in a model folder written by `TrainConfig.snapshot_fraction`


def write_snapshot_record(folder: Path, of: str, step: int) -> None:
    write_json({"of": of, "step": step}, folder / SNAPSHOT_FILE)


def snapshot_record(folder: Path) -> dict[str, Any] | None:
    """{"of": stage, "step": k} of a model folder that is a snapshot of a stage's model, else None."""
    path = folder / SNAPSHOT_FILE
    return read_json(path) if path.is_file() else None


def trained_step(run_dir: Path, folder: str) -> int | None:
    """The training step of a run's model folder: a snapshot's recorded step, else its latest checkpoint's."""
    record = snapshot_record(run_dir / folder)
    return int(record["step"]) if record else latest_step(run_dir, folder)


def capture_rng() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
    }
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state["numpy"] = {
        "kind": kind,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_checkpoint(
    folder: Path, save_model, extra_states: dict[str, dict[str, torch.Tensor]], trainer_state: dict[str, Any]
) -> Path:
    """`save_model(path)` writes the model folder; everything lands in `folder` in one atomic rename."""
    with atomic_dir(folder) as tmp:
        save_model(tmp / "model")
        flat = {f"{name}.{k}": v for name, sd in extra_states.items() for k, v in sd.items()}
        save_tensors(flat, tmp / "extra.safetensors")
        save_state(trainer_state, tmp, "trainer")
    return folder


def read_checkpoint(folder: Path) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """Return (trainer state, {extra module: state dict})."""
    if not (folder / "trainer.json").is_file():
        raise CheckpointError(f"{folder} is not a complete checkpoint (trainer.json missing)")
    state = load_state(folder, "trainer")
    extra: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in load_tensors(folder / "extra.safetensors").items():
        name, sub = key.split(".", 1)
        extra.setdefault(name, {})[sub] = value
    return state, extra


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """`optimizer.load_state_dict(state)` with every per-parameter tensor (AdamW's moments) laid out in
    memory like its parameter.

    Saved tensors come back contiguous, while a convolution's weight is often channels-last; the fused
    AdamW kernels walk parameter, gradient and moments as flat storage, so a moment in another layout
    than its parameter would update each element with another element's moment.
    """
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        for param in group["params"]:
            slots = optimizer.state.get(param, {})
            for key, value in slots.items():
                if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                    slots[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def prune_checkpoints(root: Path, keep_last: int) -> None:
    for _, path in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)
        log.debug("removed old checkpoint %s", path)
