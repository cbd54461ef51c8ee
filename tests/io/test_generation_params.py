"""PNG text metadata: parameters written with an image come back field for field; bad files are named."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from latentdiff import __version__
from latentdiff.io.generation_params import (
    PARAMS_KEY,
    SUMMARY_KEY,
    GenerationParams,
    read_generation_params,
    save_png_with_params,
)


def test_every_field_round_trips_through_the_png(tmp_path):
    params = GenerationParams(
        mode="img2img",
        run="/runs/demo",
        class_label="sneaker",
        negative_class="sandal",
        prompt="a red boot",
        negative_prompt="blurry, ünïcode ✓",
        seed=2**40 + 3,
        steps=37,
        sampler="heun",
        guidance=2.5,
        strength=0.35,
        seed_b=9,
        frames=5,
    )
    image = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8), mode="L")
    path = save_png_with_params(image, tmp_path / "a.png", params)
    assert read_generation_params(path) == params
    with Image.open(path) as img:  # the pixels are untouched and the summary names the settings
        assert np.array_equal(np.asarray(img), np.asarray(image))
        assert "seed: 1099511627779" in img.text[SUMMARY_KEY] and "steps: 37" in img.text[SUMMARY_KEY]
    assert params.version == __version__
    assert not list(tmp_path.glob(".*.tmp")), "the temporary file is gone"


def _write_bytes(path, data: bytes):
    path.write_bytes(data)
    return path


def _jpeg(path):
    Image.new("RGB", (4, 4)).save(path, format="JPEG")
    return path


def _png_with_text(path, **text):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    Image.new("L", (4, 4)).save(path, pnginfo=info)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: _write_bytes(p, b"not an image at all"), "cannot read bad.png: not a readable image"),
        (_jpeg, "bad.png is a JPEG image"),
        (lambda p: _png_with_text(p), "carries no latentdiff generation parameters"),
        (lambda p: _png_with_text(p, **{PARAMS_KEY: "{oops"}), "'latentdiff' is not valid JSON"),
        (
            lambda p: _png_with_text(p, **{PARAMS_KEY: json.dumps({"steps": "many"})}),
            "latentdiff.steps: expected",
        ),
        (
            lambda p: _png_with_text(p, **{PARAMS_KEY: json.dumps({"sede": 1})}),
            "unknown key 'bad.png: latentdiff.sede'",
        ),
        (lambda p: _png_with_text(p, **{PARAMS_KEY: json.dumps({"mode": "x"})}), "'x' is not one of"),
    ],
)
def test_a_file_without_readable_parameters_is_refused_naming_it(tmp_path, make, message):
    path = make(tmp_path / "bad.png")
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        read_generation_params(path)
