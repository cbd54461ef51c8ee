"""Where latentdiff keeps data and caches."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "LATENTDIFF_DATA"


def data_root() -> Path:
    """Built-in data, preprocessed arrays and FID statistics: `$LATENTDIFF_DATA` or `~/.cache/latentdiff`."""
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "latentdiff"
