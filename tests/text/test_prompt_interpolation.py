"""Interpolation between two prompts at one seed: the endpoints are plain sampling bit for bit, the images
between differ from both and do not depend on the direction of the walk; bad calls get clear errors."""

import numpy as np
import pytest
import torch
from PIL import Image
from test_text_to_image import _model

from latentdiff.autoencoder.config import AutoencoderConfig
from latentdiff.autoencoder.model import Autoencoder
from latentdiff.cli import main
from latentdiff.diffusion.config import DiffusionConfig
from latentdiff.pipeline import LatentDiffusionPipeline

A, B = "a red circle", "green square box"  # of different lengths: the union mask holds tokens of both


@pytest.fixture(scope="module")
def pipe() -> LatentDiffusionPipeline:
    model = _model()
    with torch.no_grad():  # a model whose text matters: random weights everywhere
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    ae = Autoencoder(AutoencoderConfig(kind="identity", in_channels=1, latent_channels=1))
    pipe = LatentDiffusionPipeline(ae, model, DiffusionConfig(), device="cpu")
    pipe.progress = False
    return pipe


@pytest.mark.parametrize("guidance, negative", [(1.0, None), (3.0, "a blue star")])
def test_endpoints_are_plain_sampling_and_the_images_between_differ(pipe, guidance, negative):
    kw = dict(steps=3, sampler="ddim", guidance_scale=guidance, negative_prompt=negative)
    walk = pipe.interpolate_prompts(A, B, n=4, seed=7, **kw)
    assert walk.shape == (4, 1, 4, 4)
    a = pipe(num_images=1, seed=7, prompt=A, output_type="pt", **kw)
    b = pipe(num_images=1, seed=7, prompt=B, output_type="pt", **kw)
    assert torch.equal(walk[0], a[0]) and torch.equal(walk[-1], b[0])
    for mid in walk[1:-1]:
        assert (mid - a[0]).abs().max() > 1e-3 and (mid - b[0]).abs().max() > 1e-3
    assert (walk[1] - walk[2]).abs().max() > 1e-3
    # the same path walked backwards: the same images (up to float rounding, amplified by guidance)
    back = pipe.interpolate_prompts(B, A, n=4, seed=7, **kw)
    torch.testing.assert_close(back.flip(0), walk, rtol=0, atol=1e-4)


def test_bad_calls_are_refused_with_clear_errors(pipe):
    with pytest.raises(ValueError, match=r"n >= 2"):
        pipe.interpolate_prompts(A, B, n=1)
    plain = LatentDiffusionPipeline(pipe.autoencoder, pipe.backbone.backbone, DiffusionConfig(), device="cpu")
    with pytest.raises(ValueError, match="needs a text-conditioned model"):
        plain.interpolate_prompts(A, B, n=3, steps=1)


def test_cli_writes_the_walk_and_a_labelled_strip(pipe, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(LatentDiffusionPipeline, "from_pretrained", classmethod(lambda cls, *a, **k: pipe))
    out = tmp_path / "walk"
    argv = ["-q", "interpolate", str(tmp_path), "--prompt-a", A, "--prompt-b", B, "--n", "3", "--seed", "5"]
    assert main([*argv, "--steps", "2", "--out", str(out)]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.glob("interp_*.png")) == [
        "interp_00.png",
        "interp_01.png",
        "interp_02.png",
    ]
    expected = pipe(num_images=1, seed=5, prompt=B, steps=2, output_type="np")[0]
    written = np.asarray(Image.open(out / "interp_02.png"))
    assert np.array_equal(written.reshape(expected.shape), expected)
    strip = Image.open(out / "grid.png")
    assert strip.width > 2 * strip.height  # one row of three images, titled with both prompts
    both = ["-q", "interpolate", str(tmp_path), "--seed-a", "1", "--prompt-a", A, "--out", str(out)]
    assert main(both) != 0 and "--seed-a and --seed-b" in capsys.readouterr().err
    one = ["-q", "interpolate", str(tmp_path), "--prompt-a", A, "--out", str(out)]
    assert main(one) != 0 and "needs both --prompt-a and --prompt-b" in capsys.readouterr().err
    mixed = [*argv, "--prompt", "x", "--out", str(out)]
    assert main(mixed) != 0 and "takes no --prompt" in capsys.readouterr().err
