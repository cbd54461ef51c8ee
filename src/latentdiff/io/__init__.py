"""Checkpoints: safetensors + JSON, written atomically, never unpickled."""

from latentdiff.io.checkpoint import (
    CheckpointError,
    atomic_dir,
    load_model_folder,
    load_state,
    load_tensors,
    refuse_pickle,
    save_model_folder,
    save_state,
)

__all__ = [
    "CheckpointError",
    "atomic_dir",
    "load_model_folder",
    "load_state",
    "load_tensors",
    "refuse_pickle",
    "save_model_folder",
    "save_state",
]
