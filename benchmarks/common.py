"""Shared by the benchmark scripts: machine description, result files, time-budgeted runs."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
RUNS = ROOT / "runs"  # trained models (git-ignored); reused across benchmarks


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit() -> str:
    """The short hash of this checkout's HEAD ("unknown" outside git): the code a number was measured with."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def machine() -> dict[str, Any]:
    """What a number was measured on."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": "cuda: " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    try:
        info["load_average_at_start"] = os.getloadavg()
        info["git_commit"] = git_commit()
    except OSError:
        pass
    return info


def write_result(name: str, data: Any) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    return path


def read_result(name: str) -> Any | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def setup(threads: int | None = None) -> None:
    """Benchmarks use every core, no DataLoader workers, INFO logs."""
    import logging

    torch.set_num_threads(threads or os.cpu_count() or 1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")


def regenerate_docs() -> Path:
    from report import build  # benchmarks/report.py, run from this folder

    return build()
