"""The device the test suite runs on: `LATENTDIFF_TEST_DEVICE` (default `cpu`; e.g. `cuda`, `cuda:1`).

A module of its own, imported as `from suite_device import ...`, because `from conftest import ...` is
ambiguous in this repo (tests/data/conftest.py exists). tests/conftest.py validates the value before
collection and gives the `device` fixture; tests that must be bit-exact stay pinned to the CPU.
"""

from __future__ import annotations

import os

import torch

ENV_VAR = "LATENTDIFF_TEST_DEVICE"
TEST_DEVICE: str = os.environ.get(ENV_VAR, "cpu")


def device_problem(name: str = TEST_DEVICE) -> str | None:
    """Why `name` cannot run the suite here, or None when it can."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as err:
        return f"{ENV_VAR}={name!r} is not a torch device ({err}); use e.g. 'cpu' or 'cuda'"
    if device.type == "cuda" and not torch.cuda.is_available():
        return f"{ENV_VAR}={name!r}, but CUDA is not available on this machine (torch {torch.__version__})"
    try:
        torch.zeros(1, device=device)
    except Exception as err:  # noqa: BLE001 - any failure to allocate there means the device is unusable
        return f"{ENV_VAR}={name!r}: cannot allocate a tensor there ({type(err).__name__}: {err})"
    return None


def on_cuda(device: str | torch.device = TEST_DEVICE) -> bool:
    return torch.device(device).type == "cuda"


def oracle_tolerance(device: str | torch.device = TEST_DEVICE, *, rtol: float = 0.0, atol: float) -> dict:
    """`rtol`/`atol` for torch.testing.assert_close when our nets are compared numerically with diffusers'.

    fp32 on the CPU: the test's own tolerances, unchanged (both sides run the same oneDNN/ATen kernels).
    On CUDA the suite runs with TF32 off (tests/conftest.py), so both sides are true fp32, but cuDNN picks
    its convolution algorithm per layer shape and memory layout, and the two implementations differ in
    how they lay out the same computation: allow ~1e-4 relative on top of the CPU's absolute tolerance.
    """
    if torch.device(device).type == "cpu":
        return dict(rtol=rtol, atol=atol)
    return dict(rtol=max(rtol, 1e-4), atol=atol)
