"""LatentDiffusionPipeline: determinism, img2img, inpainting, interpolation, guidance."""

from __future__ import annotations

import pytest
import torch
from suite_device import TEST_DEVICE

from latentdiff.io.checkpoint import CheckpointError
from latentdiff.pipeline import LatentDiffusionPipeline
from latentdiff.pipeline_editing import slerp


@pytest.fixture(scope="module")
def pipe(tiny_run):
    p = LatentDiffusionPipeline.from_pretrained(tiny_run, device=TEST_DEVICE)
    p.progress = False
    return p


@pytest.fixture(scope="module")
def digits():
    from latentdiff.data.load import load_dataset

    images, labels = load_dataset("digits", "test", 8, 1, limit=6).get_batch(range(6))
    return images, labels


def test_same_seed_same_images_other_seed_differs(pipe):
    a = pipe(num_images=4, steps=5, seed=3, output_type="pt", class_labels=[0, 1, 2, 3], guidance_scale=2.0)
    b = pipe(num_images=4, steps=5, seed=3, output_type="pt", class_labels=[0, 1, 2, 3], guidance_scale=2.0)
    c = pipe(num_images=4, steps=5, seed=4, output_type="pt", class_labels=[0, 1, 2, 3], guidance_scale=2.0)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    for sampler in ("ddpm", "ddim", "euler", "heun"):  # stochastic ones too: all noise comes from the seed
        x = pipe(num_images=2, steps=4, sampler=sampler, seed=1, output_type="pt")
        y = pipe(num_images=2, steps=4, sampler=sampler, seed=1, output_type="pt")
        assert torch.equal(x, y), sampler


def test_batch_size_does_not_change_deterministic_samples(pipe):
    a = pipe(num_images=6, steps=4, seed=0, output_type="pt", batch_size=6)
    b = pipe(num_images=6, steps=4, seed=0, output_type="pt", batch_size=4)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_output_types(pipe):
    pil = pipe(num_images=2, steps=2, seed=0)
    arr = pipe(num_images=2, steps=2, seed=0, output_type="np")
    assert pil[0].size == (8, 8) and pil[0].mode == "L"
    assert arr.shape == (2, 8, 8, 1) and arr.dtype.name == "uint8"
    assert (
        torch.from_numpy(arr[1, ..., 0]) == torch.tensor(list(pil[1].get_flattened_data())).reshape(8, 8)
    ).all()


def test_img2img_strength_zero_is_the_reconstruction(pipe, digits):
    images, _ = digits
    out = pipe.img2img(images, strength=0.0, steps=10, seed=0)
    assert torch.equal(out, pipe.reconstruct(images))
    changed = pipe.img2img(images, strength=0.8, steps=10, seed=0)
    assert not torch.allclose(changed, out)


def _pixel_space_pipeline() -> LatentDiffusionPipeline:
    """Identity autoencoder (f = 1) + an untrained U-Net: decoding is exact, so what inpainting keeps can be
    checked to float precision whatever the networks learned."""
    from latentdiff.autoencoder.config import AutoencoderConfig
    from latentdiff.autoencoder.model import Autoencoder
    from latentdiff.diffusion.config import DiffusionConfig
    from latentdiff.nets.unet import UNet, UNetConfig

    torch.manual_seed(0)
    ae = Autoencoder(
        AutoencoderConfig(
            kind="identity", in_channels=1, latent_channels=1, scale_factor=1.5, shift_factor=-0.2
        )
    )
    unet = UNet(
        UNetConfig(
            in_channels=1,
            out_channels=1,
            sample_size=8,
            base_channels=16,
            channel_mult=(1, 2),
            num_res_blocks=1,
            attention_levels=(),
            mid_attention=False,
            groups=8,
        )
    )
    p = LatentDiffusionPipeline(ae, unet, DiffusionConfig(), device=TEST_DEVICE)
    p.progress = False
    return p


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m", "euler"])
def test_inpaint_keeps_unmasked_region(digits, sampler):
    pipe = _pixel_space_pipeline()
    images, _ = digits
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 1:5] = 1
    out = pipe.inpaint(images, mask, steps=8, sampler=sampler, seed=0)
    recon = pipe.reconstruct(images)
    keep = mask.expand_as(out) == 0
    # stated tolerance: 1e-5 (the only difference is float rounding of the latent scale and shift)
    torch.testing.assert_close(out[keep], recon[keep], rtol=0, atol=1e-5)
    assert (out[~keep] - recon[~keep]).abs().mean() > 0.05  # the masked region was regenerated


def test_inpaint_in_latent_space_regenerates_only_near_the_mask(pipe, digits, monkeypatch):
    """The final latent keeps the known latent exactly outside the (latent) mask and is regenerated inside;
    compared in latent space, since the tiny decoder mixes every latent cell into every pixel."""
    images, _ = digits
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :, :2] = 1
    decoded, decode = [], pipe.decode
    monkeypatch.setattr(pipe, "decode", lambda z: decoded.append(z) or decode(z))
    out = pipe.inpaint(images, mask, steps=8, seed=0)
    (z,) = decoded
    known = pipe.encode(images)
    keep = pipe.latent_mask(mask, images).expand_as(z) == 0
    assert keep.any() and (~keep).any()
    assert torch.equal(z[keep], known[keep])
    assert (z[~keep] - known[~keep]).abs().mean() > 0.1
    assert torch.equal(out, decode(z).cpu())


def test_inpaint_mask_of_wrong_size_is_rejected(pipe, digits):
    with pytest.raises(ValueError, match="mask size"):
        pipe.inpaint(digits[0], torch.ones(1, 1, 6, 6), steps=2)


def test_interpolate_endpoints_equal_plain_sampling(pipe):
    walk = pipe.interpolate(11, 22, n=4, steps=5, class_labels=3, guidance_scale=1.5)
    a = pipe(num_images=1, steps=5, seed=11, class_labels=3, guidance_scale=1.5, output_type="pt")
    b = pipe(num_images=1, steps=5, seed=22, class_labels=3, guidance_scale=1.5, output_type="pt")
    assert torch.equal(walk[0], a[0]) and torch.equal(walk[-1], b[0])


def test_slerp_endpoints_and_norm():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 8, 8, generator=g), torch.randn(4, 8, 8, generator=g)
    assert torch.equal(slerp(a, b, 0.0), a) and torch.equal(slerp(a, b, 1.0), b)
    mid = slerp(a, b, 0.5)
    assert abs(mid.norm() - (a.norm() + b.norm()) / 2) / a.norm() < 0.05  # stays on the shell, unlike lerp


def test_guidance_one_equals_conditional_model(pipe):
    labels = torch.tensor([5, 7]).to(pipe.device)
    x = torch.randn(2, *pipe.latent_shape, generator=torch.Generator().manual_seed(0)).to(pipe.device)
    t = torch.tensor([500, 500]).to(pipe.device)
    from latentdiff.diffusion.guidance import Denoiser

    cond = {"class": labels}
    guided = Denoiser(pipe.backbone, pipe.schedule, "eps", cond, pipe.backbone.null_cond(cond), 1.0)(x, t)
    plain = pipe.backbone(x, t, cond)
    assert torch.equal(guided[1], plain)
    a = pipe(num_images=2, steps=3, seed=0, class_labels=[5, 7], guidance_scale=1.0, output_type="pt")
    assert a.shape == (2, 1, 8, 8)


def test_autoguidance_with_the_model_itself_as_guide_is_plain_sampling(pipe):
    """F_g = F makes F_g + w (F − F_g) = F for every w: the same images as unguided sampling."""
    kwargs = dict(num_images=3, steps=4, seed=2, class_labels=[1, 0, 1], output_type="pt")
    plain = pipe(**kwargs)
    pipe.guide = pipe.backbone
    try:
        auto = pipe(guidance_scale=2.5, guidance="auto", **kwargs)
        unconditional = pipe(
            num_images=2, steps=3, seed=0, guidance_scale=2.0, guidance="auto", output_type="pt"
        )
    finally:
        pipe.guide = None
    assert torch.equal(auto, plain)
    assert torch.equal(unconditional, pipe(num_images=2, steps=3, seed=0, output_type="pt"))


def test_a_guidance_interval_that_no_step_reaches_is_unguided_sampling(pipe):
    """`pipe.guidance_interval` reaches the denoiser: guidance only above σ = 1e6, beyond every step of
    the schedule, gives the conditional model's images; the whole range gives the guided ones."""
    kwargs = dict(num_images=2, steps=3, seed=1, class_labels=[3, 8], output_type="pt")
    plain, guided = pipe(**kwargs), pipe(guidance_scale=3.0, **kwargs)
    try:
        pipe.guidance_interval = (1e6, float("inf"))
        assert torch.equal(pipe(guidance_scale=3.0, **kwargs), plain)
        pipe.guidance_interval = (0.0, float("inf"))
        assert torch.equal(pipe(guidance_scale=3.0, **kwargs), guided)
    finally:
        pipe.guidance_interval = None
    assert not torch.equal(guided, plain)


def test_autoguidance_without_a_guide_or_with_an_unknown_kind_is_refused(pipe):
    with pytest.raises(ValueError, match="guidance='auto' needs a guide model"):
        pipe(num_images=1, steps=2, guidance_scale=2.0, guidance="auto", class_labels=[0])
    with pytest.raises(ValueError, match="guidance must be 'cfg'"):
        pipe(num_images=1, steps=2, guidance_scale=2.0, guidance="classifier", class_labels=[0])
    with pytest.raises(ValueError, match="guidance=.auto. when its run has a"):
        pipe(num_images=1, steps=2, guidance_scale=2.0)


def test_class_names_and_errors(pipe):
    assert pipe.class_index("7") == 7
    with pytest.raises(ValueError, match="unknown class 'cat'; valid classes: 0, 1"):
        pipe(num_images=1, steps=2, class_labels="cat")
    with pytest.raises(ValueError, match="steps must be at least 1"):
        pipe(num_images=1, steps=0)
    with pytest.raises(ValueError, match="guidance_scale != 1 needs class_labels"):
        pipe(num_images=1, steps=2, guidance_scale=3.0)


def test_denoising_trajectory_ends_at_the_sample(pipe):
    frames = pipe.denoising_trajectory(num_images=1, steps=5, at=[0, 4], seed=2)
    assert [f[0] for f in frames] == [0, 4]
    final = pipe(num_images=1, steps=5, seed=2, output_type="pt")
    torch.testing.assert_close(pipe.decode(frames[-1][2].to(pipe.device)).cpu(), final, rtol=0, atol=1e-6)


def test_missing_run_folder(tmp_path):
    with pytest.raises(CheckpointError, match="run folder not found"):
        LatentDiffusionPipeline.from_pretrained(tmp_path / "nope")
    (tmp_path / "autoencoder").mkdir()
    with pytest.raises(CheckpointError, match="no trained autoencoder"):
        LatentDiffusionPipeline.from_pretrained(tmp_path)


def test_run_folders_written_before_the_backbone_contract_still_load(tiny_run, tmp_path):
    """A run of the previous release (unet/config.json without "backbone", scheduler.json with the old
    `timestep_sampling` key) loads and samples exactly as the same run in today's format."""
    import json
    import shutil

    old = tmp_path / "old_run"
    shutil.copytree(tiny_run, old, ignore=shutil.ignore_patterns("trainer_state", "latents", "logs"))
    config = json.loads((old / "unet" / "config.json").read_text())
    del config["backbone"]
    (old / "unet" / "config.json").write_text(json.dumps(config))
    scheduler = json.loads((old / "scheduler.json").read_text())
    scheduler["timestep_sampling"] = scheduler.pop("noise_sampling")
    for key in ("sigma_data", "noise_mean", "noise_std"):
        scheduler.pop(key)
    (old / "scheduler.json").write_text(json.dumps(scheduler))
    args = dict(num_images=3, steps=4, class_labels=[1, 2, 3], guidance_scale=2.0, seed=1, output_type="pt")
    new_pipe = LatentDiffusionPipeline.from_pretrained(tiny_run, device=TEST_DEVICE)
    old_pipe = LatentDiffusionPipeline.from_pretrained(old, device=TEST_DEVICE)
    assert torch.equal(old_pipe(**args), new_pipe(**args))


def test_unseeded_generation_leaves_the_global_rng_alone(pipe):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = pipe(num_images=1, steps=2, output_type="pt")
    b = pipe(num_images=1, steps=2, output_type="pt")
    assert torch.equal(torch.rand(3), expected)
    assert not torch.equal(a, b)  # a fresh seed each call


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), -1.0])
def test_non_finite_or_negative_guidance_is_refused_everywhere(pipe, digits, scale):
    """NaN guidance used to give all-black images without a word, a negative one was taken silently."""
    from latentdiff.diffusion.guidance import Denoiser

    images, _ = digits
    mask = torch.zeros(8, 8)
    calls = {
        "__call__": lambda: pipe(num_images=1, steps=2, class_labels=3, guidance_scale=scale),
        "img2img": lambda: pipe.img2img(images[:1], steps=2, class_labels=3, guidance_scale=scale),
        "inpaint": lambda: pipe.inpaint(images[:1], mask, steps=2, class_labels=3, guidance_scale=scale),
        "interpolate": lambda: pipe.interpolate(1, 2, n=2, steps=2, class_labels=3, guidance_scale=scale),
        "trajectory": lambda: pipe.denoising_trajectory(steps=2, class_labels=3, guidance_scale=scale),
    }
    expected = r"guidance_scale must be a finite number >= 0 \(1 = no guidance, > 1 = stronger\), got "
    if scale < 0:
        expected += r"-1\.0; to steer away from a class, pass it as negative_class_labels"
    for call in calls.values():
        with pytest.raises(ValueError, match=expected):
            call()
    cond = {"class": torch.tensor([3])}
    with pytest.raises(ValueError, match="guidance_scale must be a finite number >= 0"):
        Denoiser(pipe.backbone, pipe.schedule, "eps", cond, pipe.backbone.null_cond(cond), scale)


def test_guidance_zero_and_between_zero_and_one_are_accepted(pipe):
    for scale in (0.0, 0.5):
        out = pipe(num_images=1, steps=2, class_labels=3, guidance_scale=scale, seed=0, output_type="pt")
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("batch_size", [0, -3, 2.5])
def test_bad_batch_size_is_named(pipe, batch_size):
    message = rf"batch_size must be a whole number of images >= 1, got {batch_size}$"
    with pytest.raises(ValueError, match=message):
        pipe(num_images=2, steps=2, batch_size=batch_size)


def test_generate_batches_yields_what_call_returns_one_batch_at_a_time(pipe):
    args = dict(num_images=5, steps=3, seed=4, class_labels=[1, 2, 3, 4, 5], guidance_scale=2.0)
    batches = list(pipe.generate_batches(batch_size=2, **args))
    # batches come back on the CPU whatever device the pipeline runs on
    assert [len(b) for b in batches] == [2, 2, 1] and all(b.device.type == "cpu" for b in batches)
    assert torch.equal(torch.cat(batches), pipe(batch_size=2, output_type="pt", **args))


def test_rgb_images_for_a_greyscale_model_suggest_the_channels_flag(pipe):
    message = r"the images have 3 channel\(s\), but this autoencoder takes 1: .*\(--channels 1\)"
    with pytest.raises(ValueError, match=message):
        pipe.img2img(torch.zeros(1, 3, 8, 8), steps=2)


def test_height_and_width_sample_other_sizes_than_the_trained_one(pipe):
    """The tiny U-Net (f = 2 autoencoder, two levels) takes sides in multiples of 4 px; its trained 8 px
    stays the default, and the same seed at 16 px draws a latent twice as wide."""
    assert (pipe.image_size, pipe.size_multiple) == (8, 4)
    default = pipe(num_images=1, steps=2, seed=3, output_type="pt")
    assert torch.equal(pipe(num_images=1, steps=2, seed=3, height=8, width=8, output_type="pt"), default)
    wide = pipe(num_images=2, steps=2, seed=3, height=12, width=16, output_type="pt")
    assert wide.shape == (2, 1, 12, 16) and torch.isfinite(wide).all()
    strip = pipe.interpolate(1, 2, n=2, steps=2, height=16, width=16)
    assert strip.shape == (2, 1, 16, 16)
    assert torch.equal(strip[:1], pipe(num_images=1, steps=2, seed=1, height=16, width=16, output_type="pt"))
    for bad, message in ((10, r"height=10 px: .*multiples of 4 px \(trained at 8 px\)"), (0, ">= 1")):
        with pytest.raises(ValueError, match=message):
            pipe(num_images=1, steps=1, height=bad)
