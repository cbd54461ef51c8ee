"""`latentdiff sample --from-png`: the settings a PNG carries make the same image as `pipe(...)` does."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image
from suite_device import TEST_DEVICE

from latentdiff.cli import main
from latentdiff.io.generation_params import GenerationParams, read_generation_params, save_png_with_params
from latentdiff.pipeline import LatentDiffusionPipeline


@pytest.fixture(scope="module")
def pipe(tiny_run):
    p = LatentDiffusionPipeline.from_pretrained(tiny_run, device=TEST_DEVICE)
    p.progress = False
    return p


def _png(path, params: GenerationParams):
    # the pixels do not matter: only the settings are read back
    return save_png_with_params(Image.new("L", (8, 8), 128), path, params)


def test_from_png_reproduces_the_pipelines_image_bit_for_bit(capsys, pipe, tiny_run, tmp_path):
    params = GenerationParams(
        run=str(tiny_run), class_label="3", seed=11, steps=4, sampler="ddim", guidance=2.0
    )
    expected = pipe(
        num_images=1, steps=4, sampler="ddim", guidance_scale=2.0, class_labels="3", seed=11, output_type="np"
    )[0, ..., 0]
    source = _png(tmp_path / "made.png", params)
    code = main(
        ["-q", "sample", "--from-png", str(source), "--out", str(tmp_path / "again"), "--device", TEST_DEVICE]
    )
    assert code == 0, capsys.readouterr().err
    again = tmp_path / "again" / "made.png"
    assert np.array_equal(np.asarray(Image.open(again)), expected)
    assert read_generation_params(again) == params, "the copy carries the same settings"

    # the run can be given when the folder moved; an unconditional draw works too
    moved = _png(tmp_path / "uncond.png", replace(params, run="/nowhere", class_label=None, guidance=1.0))
    code = main(["-q", "sample", str(tiny_run), "--from-png", str(moved), "--out", str(tmp_path / "u")])
    assert code == 0, capsys.readouterr().err
    uncond = pipe(num_images=1, steps=4, sampler="ddim", seed=11, output_type="np")[0, ..., 0]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "u" / "uncond.png")), uncond)


@pytest.mark.parametrize(
    "extra, params, message",
    [
        (["--steps", "7"], {}, "--from-png takes every setting from .*made.png; drop --steps"),
        ([], {"mode": "inpaint"}, "made by inpaint, which needs its input image too"),
        ([], {"class_label": "no-such-class"}, "unknown class 'no-such-class'"),
        ([], {"prompt": "a cat"}, "hold a prompt .*'a cat'.*takes no text"),
    ],
)
def test_from_png_refuses_what_it_cannot_reproduce(capsys, tiny_run, tmp_path, extra, params, message):
    source = _png(tmp_path / "made.png", GenerationParams(run=str(tiny_run), steps=2, **params))
    code = main(["sample", "--from-png", str(source), "--out", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
    assert not (tmp_path / "o").exists()


def test_from_png_names_a_file_without_settings(capsys, tmp_path):
    Image.new("L", (4, 4)).save(tmp_path / "plain.png")
    code = main(["sample", "--from-png", str(tmp_path / "plain.png"), "--out", str(tmp_path / "o")])
    assert code == 1 and "plain.png carries no latentdiff generation parameters" in capsys.readouterr().err
