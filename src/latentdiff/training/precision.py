"""Mixed precision: bf16 autocast on CPU and CUDA, fp16 on CUDA only."""

from __future__ import annotations

import contextlib

import torch


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(
            f"precision fp16 is not supported on {device.type}: CPUs have no fast fp16 units and fp16 "
            "training without a loss scaler is unstable; use precision bf16 (or fp32)"
        )
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
