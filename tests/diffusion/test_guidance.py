"""Denoiser: preconditioning, classifier-free guidance with the null or a negative conditioning in one
batched pass, x0 clipping."""

from __future__ import annotations

import pytest
import torch
from diffusion_toys import schedule_for, toy_model

from latentdiff.diffusion import Denoiser, Preconditioning, levels_at_timesteps


class CountingModel:
    def __init__(self, model):
        self.model, self.batches = model, []

    def __call__(self, x, t, cond):
        labels = None if not cond else cond["class"].tolist()
        self.batches.append((x.shape[0], labels))
        return self.model(x, t, cond)


def reference(out, x, t, sched, prediction):
    return Preconditioning(prediction).denoised(out, x, levels_at_timesteps(sched, t))


@pytest.mark.parametrize("prediction", ["eps", "v", "x0", "edm"])
def test_guidance_scale_one_is_the_conditional_model_alone(prediction):
    sched = schedule_for()
    if prediction == "edm":  # c_noise = ¼ ln σ is no timestep: a network that takes any noise input
        model = CountingModel(lambda x, c, cond: torch.tanh(x + c.to(x.dtype).reshape(-1, 1, 1, 1)))
    else:
        model = CountingModel(toy_model(sched, prediction))
    x, t, labels = torch.randn(3, 2, 4, 4), torch.tensor([10, 500, 999]), torch.tensor([0, 1, 2])
    den = Denoiser(model, sched, prediction, {"class": labels}, {"class": torch.full((3,), 3)}, 1.0)
    x0, eps = den(x, t)
    assert model.batches == [(3, [0, 1, 2])]
    levels = levels_at_timesteps(sched, t)
    scale = Preconditioning(prediction).input_scale(levels)
    x_in = x if scale is None else x * scale.float().reshape(-1, 1, 1, 1)
    c_noise = Preconditioning(prediction).c_noise(levels, sched)
    ref_x0, ref_eps = reference(model.model(x_in, c_noise, {"class": labels}), x, t, sched, prediction)
    assert torch.equal(x0, ref_x0) and torch.equal(eps, ref_eps)


@pytest.mark.parametrize("scale", [0.0, 3.5])
@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_guidance_is_uncond_plus_scale_times_difference_in_one_forward(prediction, scale):
    sched = schedule_for()
    model = CountingModel(toy_model(sched, prediction))
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    t, labels, null = torch.tensor([250, 750]), torch.tensor([4, 1]), torch.tensor([9, 9])
    x0, eps = Denoiser(model, sched, prediction, {"class": labels}, {"class": null}, scale)(x, t)
    assert model.batches == [(4, [4, 1, 9, 9])]
    cond = model.model(x, t, {"class": labels})
    uncond = model.model(x, t, {"class": null})
    ref_x0, ref_eps = reference(uncond + scale * (cond - uncond), x, t, sched, prediction)
    torch.testing.assert_close(x0, ref_x0, atol=1e-12, rtol=0)
    torch.testing.assert_close(eps, ref_eps, atol=1e-12, rtol=0)


def test_negative_conditioning_takes_the_place_of_the_null():
    """Guided by a negative class, x̂0 moves away from it: x̂0_w = x̂0_neg + w (x̂0_cond − x̂0_neg), and the
    network never sees the null class."""
    sched = schedule_for()
    model = CountingModel(toy_model(sched, "eps"))
    x, t = torch.randn(2, 2, 4, 4, dtype=torch.float64), torch.tensor([100, 600])
    cond, negative = {"class": torch.tensor([1, 2])}, {"class": torch.tensor([5, 6])}
    x0, _ = Denoiser(model, sched, "eps", cond, negative, 2.0)(x, t)
    assert model.batches == [(4, [1, 2, 5, 6])]
    x0_cond, _ = Denoiser(model.model, sched, "eps", cond)(x, t)
    x0_neg, _ = Denoiser(model.model, sched, "eps", negative)(x, t)
    torch.testing.assert_close(x0, x0_neg + 2.0 * (x0_cond - x0_neg), atol=1e-12, rtol=0)


def test_clip_x0_clamps_and_keeps_the_pair_on_the_forward_process():
    sched = schedule_for()
    x = 3 * torch.randn(2, 2, 4, 4, dtype=torch.float64)
    t = torch.tensor([1, 900])
    x0, eps = Denoiser(toy_model(sched, "x0"), sched, "x0", clip_x0=(-0.1, 0.1))(x, t)
    assert x0.abs().max() <= 0.1 and (x0.abs() == 0.1).any()
    alpha, sigma = (c.reshape(-1, 1, 1, 1) for c in sched.alpha_sigma(t))
    torch.testing.assert_close(alpha * x0 + sigma * eps, x, atol=1e-12, rtol=1e-12)


def test_guidance_without_conditioning_raises():
    sched = schedule_for()
    with pytest.raises(ValueError, match="needs a conditioning and an unconditional"):
        Denoiser(toy_model(sched, "eps"), sched, "eps", guidance_scale=2.0)
    with pytest.raises(ValueError, match="needs a conditioning and an unconditional"):
        Denoiser(toy_model(sched, "eps"), sched, "eps", {"class": torch.tensor([1, 2])}, None, 2.0)
    den = Denoiser(toy_model(sched, "eps"), sched, "eps", {"class": torch.tensor([1, 2, 3])})
    with pytest.raises(ValueError, match=r"cond\['class'\] has batch \(3,\), the latents 2"):
        den(torch.zeros(2, 1, 2, 2), torch.tensor([5, 5]))
    other = {"mask": torch.ones(1)}
    den = Denoiser(toy_model(sched, "eps"), sched, "eps", {"class": torch.ones(1)}, other, 2)
    with pytest.raises(ValueError, match="same conditioning keys"):
        den(torch.zeros(1, 1, 2, 2), torch.tensor([5]))


@pytest.mark.parametrize("scale", [0.0, 2.5])
def test_autoguidance_contrasts_with_the_guide_under_the_same_conditioning(scale):
    """Karras et al. 2024, eq. 2: F_g + w (F − F_g), the guide given the same labels, never the null."""
    sched = schedule_for()
    model = CountingModel(toy_model(sched, "eps"))
    guide = CountingModel(lambda x, t, cond: 0.5 * toy_model(sched, "eps")(x, t, cond) + 0.1)
    x, t = torch.randn(2, 2, 4, 4, dtype=torch.float64), torch.tensor([100, 600])
    cond = {"class": torch.tensor([1, 2])}
    null = {"class": torch.tensor([9, 9])}
    x0, eps = Denoiser(model, sched, "eps", cond, null, scale, guide=guide)(x, t)
    assert model.batches == [(2, [1, 2])] and guide.batches == [(2, [1, 2])]
    f, f_g = model.model(x, t, cond), guide.model(x, t, cond)
    ref_x0, ref_eps = reference(f_g + scale * (f - f_g), x, t, sched, "eps")
    torch.testing.assert_close(x0, ref_x0, atol=1e-12, rtol=0)
    torch.testing.assert_close(eps, ref_eps, atol=1e-12, rtol=0)


def test_autoguidance_guides_an_unconditional_model_and_w_one_skips_the_guide():
    sched = schedule_for()
    model, guide = CountingModel(toy_model(sched, "v")), CountingModel(lambda x, t, cond: 0 * x)
    x, t = torch.randn(3, 2, 4, 4, dtype=torch.float64), torch.tensor([5, 500, 990])
    x0, _ = Denoiser(model, sched, "v", guidance_scale=3.0, guide=guide)(x, t)
    ref_x0, _ = reference(3.0 * model.model(x, t, None), x, t, sched, "v")
    torch.testing.assert_close(x0, ref_x0, atol=1e-12, rtol=0)
    model.batches.clear(), guide.batches.clear()
    Denoiser(model, sched, "v", guidance_scale=1.0, guide=guide)(x, t)
    assert len(model.batches) == 1 and guide.batches == []


def test_a_guidance_interval_guides_only_the_noise_levels_inside_it():
    """Kynkäänniemi et al. 2024: inside (σ_lo, σ_hi] the guided output, outside the network alone, with
    no guide pass for a batch that is all outside; a mixed batch gets each sample's own."""
    sched = schedule_for()
    model = CountingModel(toy_model(sched, "eps"))
    guide = CountingModel(lambda x, t, cond: 0.5 * toy_model(sched, "eps")(x, t, cond))
    x, cond = torch.randn(3, 2, 4, 4, dtype=torch.float64), {"class": torch.tensor([1, 2, 3])}
    t = torch.tensor([5, 500, 990])
    sigma = levels_at_timesteps(sched, t).sigma
    interval = (sigma[0].item(), sigma[1].item())  # (σ(t=5), σ(t=500)]: only the middle sample
    guided_all = Denoiser(model.model, sched, "eps", cond, guidance_scale=2.0, guide=guide.model)(x, t)[0]
    plain = Denoiser(model.model, sched, "eps", cond)(x, t)[0]
    den = Denoiser(model, sched, "eps", cond, guidance_scale=2.0, guide=guide, guidance_interval=interval)
    x0 = den(x, t)[0]
    assert not torch.allclose(guided_all[1], plain[1])
    torch.testing.assert_close(x0[1], guided_all[1], atol=1e-12, rtol=0)
    torch.testing.assert_close(x0[[0, 2]], plain[[0, 2]], atol=1e-12, rtol=0)
    model.batches.clear(), guide.batches.clear()
    den(x, torch.tensor([990, 990, 990]))
    assert len(model.batches) == 1 and guide.batches == []


@pytest.mark.parametrize("bad", [(1.0, 1.0), (-1.0, 2.0), (3.0, 2.0), ("a", 2), (1.0,)])
def test_a_bad_guidance_interval_is_refused_with_its_name(bad):
    sched = schedule_for()
    with pytest.raises(ValueError, match="guidance_interval"):
        Denoiser(toy_model(sched, "eps"), sched, "eps", guidance_interval=bad)
