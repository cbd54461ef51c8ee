"""Checkpoints without pickle, written atomically.

A model is a folder: `config.json` + `model.safetensors` (+ `ema.safetensors`). Arbitrary nested state
(optimizer, scheduler, RNG states) is split into a JSON skeleton and a safetensors file of its tensors.
Every folder is written under a temporary name, fsync'ed and renamed into place, so a crash or a kill in
the middle of a save leaves the previous version intact.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"}
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
CONFIG_FILE = "config.json"
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
DIFFUSERS_PICKLED_WEIGHTS = tuple(f"diffusion_pytorch_model{s}" for s in (".bin", ".ckpt", ".pt"))


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged or unsafe; the message names the file."""


def refuse_pickle(path: str | Path) -> None:
    """Raise if `path` is (or looks like) a pickle: loading one can run arbitrary code."""
    path = Path(path)
    looks_pickled = path.suffix.lower() in PICKLE_SUFFIXES
    if not looks_pickled and path.is_file():
        with open(path, "rb") as f:
            head = f.read(9)
        # a safetensors file starts with its header length (8 bytes, little endian) and then "{": its first
        # byte may well be 0x80, so recognise the layout before sniffing for pickle magic
        header_len = int.from_bytes(head[:8], "little") if len(head) == 9 else -1
        is_safetensors = head[8:9] == b"{" and 0 < 8 + header_len <= path.stat().st_size
        looks_pickled = not is_safetensors and (head[:1] == b"\x80" or head[:2] == b"PK")
    if looks_pickled:
        raise CheckpointError(
            f"refusing to load {path}: it is a pickle-based checkpoint, and unpickling can execute arbitrary "
            "code. If you trust its source, convert it once to safetensors, e.g.\n"
            f'  python -c "import torch; from safetensors.torch import save_file; '
            f"sd = torch.load('{path}', map_location='cpu', weights_only=True); "
            f"sd = sd.get('state_dict', sd); "
            f"save_file({{k: v.contiguous() for k, v in sd.items()}}, "
            f"'{path.with_suffix('.safetensors')}')\"\n"
            "then load the .safetensors file."
        )


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file (never a pickle)."""
    path = Path(path)
    refuse_pickle(path)
    if not path.is_file():
        raise CheckpointError(f"missing checkpoint file: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e


def diffusers_weights_file(folder: str | Path) -> Path:
    """The safetensors weights of a diffusers model folder; pickled weights found instead are refused."""
    folder = Path(folder)
    weights = folder / DIFFUSERS_WEIGHTS
    if not weights.is_file():
        for name in DIFFUSERS_PICKLED_WEIGHTS:
            if (folder / name).is_file():
                refuse_pickle(folder / name)
        raise CheckpointError(f"{folder}: no {DIFFUSERS_WEIGHTS} in this folder")
    return weights


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_tensors(
    tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None
) -> None:
    # clone: safetensors refuses tensors that share storage (tied weights, views)
    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    save_file(plain, str(path), metadata=metadata)


def write_json(obj: Any, path: str | Path) -> None:
    Path(path).write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"missing file: {path}") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e


def _backup_name(final: Path) -> Path:
    return final.with_name(f".{final.name}.old")


def recover_dir(final: Path) -> Path:
    """If a replace was interrupted between its two renames, put the previous version back."""
    backup = _backup_name(final)
    if not final.exists() and backup.exists():
        os.rename(backup, final)
        log.warning("recovered %s from an interrupted save", final)
    return final


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `final` in one rename (two if `final` exists).

    A failure or kill while the body runs leaves `final` untouched; stale temporary folders are removed by
    the next save of the same folder.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(final)
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    tmp.mkdir()
    try:
        yield tmp
        for p in tmp.rglob("*"):
            if p.is_file():
                _fsync_file(p)
        _fsync_dir(tmp)
        if final.exists():
            backup = _backup_name(final)
            shutil.rmtree(backup, ignore_errors=True)
            os.rename(final, backup)
            os.rename(tmp, final)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.rename(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---------------------------------------------------------------------------------------------- model folders


def save_model_folder(
    path: str | Path,
    config: dict[str, Any],
    state: dict[str, torch.Tensor],
    ema_state: dict[str, torch.Tensor] | None = None,
    extra_json: dict[str, Any] | None = None,
) -> Path:
    """Write `config.json`, `model.safetensors` and optionally `ema.safetensors` atomically; `extra_json`
    maps further file names to objects written as JSON in the same atomic step (records that must never
    be separated from the weights, e.g. the hash of the autoencoder a backbone was trained on)."""
    path = Path(path)
    with atomic_dir(path) as tmp:
        write_json(config, tmp / CONFIG_FILE)
        save_tensors(state, tmp / MODEL_FILE)
        if ema_state is not None:
            save_tensors(ema_state, tmp / EMA_FILE)
        for name, obj in (extra_json or {}).items():
            write_json(obj, tmp / name)
    return path


def load_model_folder(
    path: str | Path, weights: str = "model"
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Return (config, state dict). `weights` is "model", "ema", or "auto" (EMA when present)."""
    path = recover_dir(Path(path))
    if path.is_file():
        refuse_pickle(path)
        raise CheckpointError(
            f"{path}: expected a model folder (config.json + model.safetensors), got a file"
        )
    if not path.is_dir():
        raise CheckpointError(f"model folder not found: {path}")
    config = read_json(path / CONFIG_FILE)
    if weights == "auto":
        weights = "ema" if (path / EMA_FILE).is_file() else "model"
    if weights not in ("model", "ema"):
        raise ValueError(f"weights must be 'model', 'ema' or 'auto', got {weights!r}")
    return config, load_tensors(path / (EMA_FILE if weights == "ema" else MODEL_FILE))


def load_tagged_model_folder(
    path: str | Path, fmt: str, version: int, weights: str = "auto"
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """`load_model_folder` for a folder whose config.json carries `format`/`version` tags (and a backbone's
    `backbone` name): checks them and returns the configuration without them."""
    config, state = load_model_folder(path, weights)
    found, found_version = config.pop("format", None), config.pop("version", None)
    config.pop("backbone", None)
    if found != fmt:
        raise CheckpointError(f"{Path(path) / CONFIG_FILE}: format is {found!r}, expected {fmt!r}")
    if found_version != version:
        raise CheckpointError(f"{Path(path) / CONFIG_FILE}: unsupported {fmt} version {found_version!r}")
    return config, state


def save_diffusers_folder(config: dict[str, Any], state: dict[str, torch.Tensor], path: str | Path) -> Path:
    """A diffusers model folder (`config.json` + `diffusion_pytorch_model.safetensors`), atomically."""
    path = Path(path)
    with atomic_dir(path) as tmp:
        write_json(config, tmp / "config.json")
        save_tensors(state, tmp / DIFFUSERS_WEIGHTS, metadata={"format": "pt"})
    return path


# ------------------------------------------------------------------------------ nested state (optimizer, RNG)


def flatten_state(obj: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split nested python state into a JSON-safe skeleton and a flat dict of tensors."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            key = f"t{len(tensors)}"
            tensors[key] = x
            return {"__tensor__": key}
        if isinstance(x, dict):
            if all(isinstance(k, str) for k in x):
                return {"__dict__": {k: walk(v) for k, v in x.items()}}
            return {"__items__": [[walk(k), walk(v)] for k, v in x.items()]}
        if isinstance(x, tuple):
            return {"__tuple__": [walk(v) for v in x]}
        if isinstance(x, list):
            return [walk(v) for v in x]
        if x is None or isinstance(x, bool | int | float | str):
            return x
        raise TypeError(f"cannot store {type(x).__name__} in a checkpoint without pickle")

    return walk(obj), tensors


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    def walk(x: Any) -> Any:
        if isinstance(x, list):
            return [walk(v) for v in x]
        if isinstance(x, dict):
            if "__tensor__" in x:
                return tensors[x["__tensor__"]]
            if "__dict__" in x:
                return {k: walk(v) for k, v in x["__dict__"].items()}
            if "__items__" in x:
                return {walk(k): walk(v) for k, v in x["__items__"]}
            if "__tuple__" in x:
                return tuple(walk(v) for v in x["__tuple__"])
            raise CheckpointError(f"unrecognised entry in saved state: {list(x)}")
        return x

    return walk(skeleton)


def save_state(obj: Any, folder: Path, name: str) -> None:
    """Write nested state as `<name>.json` + `<name>.safetensors` inside an (already temporary) folder."""
    skeleton, tensors = flatten_state(obj)
    write_json(skeleton, folder / f"{name}.json")
    save_tensors(tensors, folder / f"{name}.safetensors")


def load_state(folder: Path, name: str) -> Any:
    skeleton = read_json(folder / f"{name}.json")
    return unflatten_state(skeleton, load_tensors(folder / f"{name}.safetensors"))
