"""The work behind the web page, without a browser: reproducible images, the preview, cancel, inputs."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image
from suite_device import TEST_DEVICE

from latentdiff.io.generation_params import GenerationParams, read_generation_params
from latentdiff.pipeline import LatentDiffusionPipeline
from latentdiff.ui.worker import Cancelled, Studio


@pytest.fixture(scope="module")
def studio(tiny_run, tmp_path_factory):
    return Studio([tiny_run], tmp_path_factory.mktemp("ui_out"), device=TEST_DEVICE)


def test_image_k_is_pipe_with_seed_plus_k_and_its_png_says_so(studio, tiny_run):
    pipe = LatentDiffusionPipeline.from_pretrained(tiny_run, device=TEST_DEVICE)
    name = next(iter(studio.infos))
    params = GenerationParams(run=name, class_label="4", seed=5, steps=3, guidance=1.5)
    paths = studio.generate(params, 2, threading.Event())
    for k, path in enumerate(paths):
        expected = pipe(
            num_images=1, steps=3, guidance_scale=1.5, class_labels=4, seed=5 + k, output_type="np"
        )
        assert np.array_equal(np.asarray(Image.open(path)), expected[0, ..., 0])
        saved = read_generation_params(path)
        assert (saved.seed, saved.class_label, saved.run) == (5 + k, "4", str(tiny_run.resolve()))


def test_cancel_stops_after_the_step_in_progress_and_previews_show_x0(studio):
    name = next(iter(studio.infos))
    cancel, steps, previews = threading.Event(), [], []

    def on_step(k, step, preview):
        steps.append(step)
        if preview is not None:
            previews.append(preview)
        if step == 4:
            cancel.set()  # as the Cancel button does, from another thread, while step 5 is due

    with pytest.raises(Cancelled) as stopped:
        studio.generate(GenerationParams(run=name, seed=1, steps=20), 3, cancel, on_step=on_step)
    assert steps == [1, 2, 3, 4] and stopped.value.step == 4, "no step runs after the one in progress"
    assert len(previews) == 2 and previews[0].shape == (8, 8) and previews[0].dtype == np.uint8


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(steps=0), "steps must be between 1 and 500"),
        (dict(sampler="plms"), "unknown sampler 'plms'"),
        (dict(class_label="eleven"), "unknown class 'eleven'"),
        (dict(negative_class="2"), "a negative class needs a class"),
        (dict(guidance=-1.0), "guidance must be a finite number >= 0"),
        (dict(prompt="a cat"), "takes no text"),
        (dict(run="elsewhere"), "unknown run 'elsewhere'"),
        (dict(class_label="1", guidance=2.0, guidance_kind="auto"), "autoguidance needs the run's guide"),
    ],
)
def test_bad_settings_are_refused_with_a_message_before_sampling(studio, change, message):
    params = GenerationParams(**{"run": next(iter(studio.infos)), "steps": 2, **change})
    with pytest.raises(ValueError, match=message):
        studio.generate(params, 1, threading.Event())


def test_a_mask_of_another_size_than_the_image_is_refused(studio):
    name = next(iter(studio.infos))
    with pytest.raises(ValueError, match=r"the mask is 4×4 px but the image is 8×8 px"):
        studio.mask_from_layer(name, Image.new("RGBA", (4, 4)), (8, 8))
    painted = Image.new("RGBA", (16, 16))
    painted.paste((255, 0, 0, 255), (0, 0, 8, 16))  # the left half, painted on a 16 px upload
    mask = studio.mask_from_layer(name, painted, (16, 16))
    assert mask.shape == (1, 1, 8, 8) and mask[..., :4].all() and not mask[..., 4:].any()


def test_inpaint_keeps_the_unpainted_pixels_and_regenerates_the_rest_as_the_pipeline_does(studio, tiny_run):
    import torch

    name = next(iter(studio.infos))
    pipe = LatentDiffusionPipeline.from_pretrained(tiny_run, device=TEST_DEVICE)
    digit = (np.add.outer(np.arange(8), np.arange(8)) * 16).clip(0, 255).astype(np.uint8)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4] = 1
    path, _ = studio.inpaint(GenerationParams(run=name, seed=77, steps=4), Image.fromarray(digit), mask)
    result = np.asarray(Image.open(path))
    x = studio.load_input(name, Image.fromarray(digit))  # the uploaded image as the model's input
    assert np.array_equal(((x[0, 0] + 1) * 127.5).round().numpy(), digit)
    regenerated = pipe.inpaint(x, mask, steps=4, sampler="dpmpp_2m", seed=77, output_type="np")[0, ..., 0]
    assert np.array_equal(result[:, 4:], digit[:, 4:]), "unpainted pixels are the input's, exactly"
    assert np.array_equal(result[:, :4], regenerated[:, :4]), "painted ones are pipe.inpaint's"
    assert read_generation_params(path).mode == "inpaint"


def test_a_text_run_takes_prompt_and_negative_prompt_and_refuses_an_empty_prompt(tiny_text_run, tmp_path):
    studio = Studio([tiny_text_run], tmp_path / "out", device=TEST_DEVICE)
    name = next(iter(studio.infos))
    assert studio.infos[name].conditioning == "text"
    params = GenerationParams(
        run=name, prompt="a square on the left", negative_prompt="right", seed=9, steps=2, guidance=2.5
    )
    (path,) = studio.generate(params, 1, threading.Event())
    pipe = studio.pipe(name)
    expected = pipe(
        num_images=1, steps=2, guidance_scale=2.5, seed=9, prompt="a square on the left",
        negative_prompt="right", output_type="np",
    )[0, ..., 0]  # fmt: skip
    assert np.array_equal(np.asarray(Image.open(path)), expected)
    saved = read_generation_params(path)
    assert (saved.prompt, saved.negative_prompt, saved.class_label) == ("a square on the left", "right", None)
    with pytest.raises(ValueError, match="text-conditioned: type a prompt"):
        studio.generate(GenerationParams(run=name, prompt="  ", steps=2), 1, threading.Event())
    with pytest.raises(ValueError, match="unknown class|takes no class|unconditional"):
        studio.generate(GenerationParams(run=name, prompt="x", class_label="3"), 1, threading.Event())


def test_image_size_other_than_the_trained_one_is_pipe_with_height_and_width(studio, tiny_run):
    name = next(iter(studio.infos))
    assert studio.infos[name].sizes == [8, 12, 16], "1x, 1.5x and 2x the trained 8 px (multiples of 4)"
    params = GenerationParams(run=name, class_label="2", seed=4, steps=2, height=16, width=16)
    (path,) = studio.generate(params, 1, threading.Event())
    expected = studio.pipe(name)(
        num_images=1, steps=2, class_labels=2, seed=4, height=16, width=16, output_type="np"
    )[0, ..., 0]
    assert np.array_equal(np.asarray(Image.open(path)), expected)
    assert (read_generation_params(path).height, read_generation_params(path).width) == (16, 16)
    with pytest.raises(ValueError, match=r"height=10 px: .*multiples of 4 px"):
        studio.generate(GenerationParams(run=name, steps=2, height=10, width=10), 1, threading.Event())
    strip = np.asarray(Image.open(studio.interpolate(params, seed_b=5, frames=2)))
    assert strip.shape[0] == 16 + 2, "a strip of 16 px images (1 px padding)"


def test_interpolating_between_prompts_is_pipe_interpolate_prompts(tiny_text_run, tmp_path):
    studio = Studio([tiny_text_run], tmp_path / "out", device=TEST_DEVICE)
    name = next(iter(studio.infos))
    params = GenerationParams(run=name, prompt="a square on the left", seed=3, steps=2)
    pipe = studio.pipe(name)
    path = studio.interpolate_prompts(params, "a square on the right", 3)
    expected = pipe.interpolate_prompts(
        "a square on the left", "a square on the right", n=3, seed=3, steps=2, output_type="pt"
    )
    from latentdiff.io.images import make_grid, to_uint8

    grid = to_uint8(make_grid(expected, nrow=3, padding=1)[None])[0, ..., 0]
    assert np.array_equal(np.asarray(Image.open(path)), grid)
    assert read_generation_params(path).prompt_b == "a square on the right"
    with pytest.raises(ValueError, match="type prompt B"):
        studio.interpolate_prompts(params, "", 3)


def test_autoguidance_on_the_page_is_the_pipelines_for_generate_and_the_edits(guided_run, tmp_path):
    """An unconditional image guided by the run's guide (what classifier-free guidance cannot do), the
    same for img2img; the PNG records the kind; a negative class (a classifier-free notion) is refused."""
    studio = Studio([guided_run], tmp_path / "out", device=TEST_DEVICE)
    name = next(iter(studio.infos))
    assert studio.infos[name].has_guide
    pipe = studio.pipe(name)
    params = GenerationParams(run=name, seed=2, steps=3, guidance=2.0, guidance_kind="auto")
    (path,) = studio.generate(params, 1, threading.Event())
    expected = pipe(num_images=1, steps=3, guidance_scale=2.0, guidance="auto", seed=2, output_type="np")
    assert np.array_equal(np.asarray(Image.open(path)), expected[0, ..., 0])
    assert not np.array_equal(expected, pipe(num_images=1, steps=3, seed=2, output_type="np")), "guided"
    assert read_generation_params(path).guidance_kind == "auto"
    digit = Image.fromarray((np.add.outer(np.arange(8), np.arange(8)) * 16).clip(0, 255).astype(np.uint8))
    edited = studio.img2img(GenerationParams(**{**vars(params), "strength": 0.6}), digit)
    x = studio.load_input(name, digit)
    again = pipe.img2img(x, 0.6, steps=3, guidance_scale=2.0, guidance="auto", seed=2, output_type="np")
    assert np.array_equal(np.asarray(Image.open(edited)), again[0, ..., 0])
    with pytest.raises(ValueError, match="negative class or prompt steers classifier-free guidance"):
        negative = GenerationParams(run=name, class_label="1", negative_class="2", guidance_kind="auto")
        studio.generate(negative, 1, threading.Event())
