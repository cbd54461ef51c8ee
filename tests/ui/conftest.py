"""A tiny text-conditioned run for the web UI's tests: the session's tiny autoencoder, a U-Net with
cross-attention trained for a few steps on captioned 8×8 squares (left or right), from the command line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_text import TINY_TEXT_UNET


@pytest.fixture(scope="session")
def tiny_text_run(tiny_run, tmp_path_factory) -> Path:
    from latentdiff.cli import main

    root = tmp_path_factory.mktemp("ui_text_run")
    data = root / "captioned"
    data.mkdir()
    for i in range(16):
        img = np.zeros((8, 8), np.uint8)
        side = "left" if i % 2 else "right"
        img[2:6, (0 if side == "left" else 4) : (4 if side == "left" else 8)] = 200 + i
        Image.fromarray(img).save(data / f"img{i:02d}.png")
        (data / f"img{i:02d}.txt").write_text(f"a square on the {side}")
    tiny = TINY_TEXT_UNET
    run = root / "run"
    argv = ["-q", "train-diffusion", "--data", str(data), "--out", str(run), "--autoencoder"]
    assert main([*argv, str(tiny_run / "autoencoder"), "--steps", "4", "--batch-size", "8", *tiny]) == 0
    return run


@pytest.fixture(scope="session")
def guided_run(tiny_run, tmp_path_factory):
    """The tiny run with a guide model: its own U-Net with every weight scaled by 0.9 (a weaker network)."""
    import shutil

    from safetensors.torch import load_file, save_file

    run = tmp_path_factory.mktemp("guided") / "guided_run"  # a name no other run contains
    shutil.copytree(tiny_run, run)
    shutil.copytree(run / "unet", run / "guide")
    for path in (run / "guide").glob("*.safetensors"):
        weights = load_file(path)
        save_file({k: v * 0.9 if v.is_floating_point() else v for k, v in weights.items()}, path)
    return run
