"""Denoiser: prediction conversion, classifier-free guidance in one batched pass, x0 clipping."""

from __future__ import annotations

import pytest
import torch
from diffusion_toys import schedule_for, toy_model

from latentdiff.diffusion import Denoiser, predict_x0_eps


class CountingModel:
    def __init__(self, model):
        self.model, self.batches = model, []

    def __call__(self, x, t, labels):
        self.batches.append((x.shape[0], None if labels is None else labels.tolist()))
        return self.model(x, t, labels)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_guidance_scale_one_is_the_conditional_model_alone(prediction):
    sched = schedule_for()
    model = CountingModel(toy_model(sched, prediction))
    x, t, labels = torch.randn(3, 2, 4, 4), torch.tensor([10, 500, 999]), torch.tensor([0, 1, 2])
    x0, eps = Denoiser(model, sched, prediction, labels, guidance_scale=1.0, null_label=3)(x, t)
    ref_x0, ref_eps = predict_x0_eps(model.model(x, t, labels), x, t, sched, prediction)
    assert torch.equal(x0, ref_x0) and torch.equal(eps, ref_eps)
    assert model.batches == [(3, [0, 1, 2])]


@pytest.mark.parametrize("scale", [0.0, 3.5])
@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_guidance_is_uncond_plus_scale_times_difference_in_one_forward(prediction, scale):
    sched = schedule_for()
    model = CountingModel(toy_model(sched, prediction))
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    t, labels = torch.tensor([250, 750]), torch.tensor([4, 1])
    x0, eps = Denoiser(model, sched, prediction, labels, guidance_scale=scale, null_label=9)(x, t)
    assert model.batches == [(4, [4, 1, 9, 9])]
    cond = model.model(x, t, labels)
    uncond = model.model(x, t, torch.tensor([9, 9]))
    ref_x0, ref_eps = predict_x0_eps(uncond + scale * (cond - uncond), x, t, sched, prediction)
    torch.testing.assert_close(x0, ref_x0, atol=1e-12, rtol=0)
    torch.testing.assert_close(eps, ref_eps, atol=1e-12, rtol=0)


def test_clip_x0_clamps_and_keeps_the_pair_on_the_forward_process():
    sched = schedule_for()
    x = 3 * torch.randn(2, 2, 4, 4, dtype=torch.float64)
    t = torch.tensor([1, 900])
    x0, eps = Denoiser(toy_model(sched, "x0"), sched, "x0", clip_x0=(-0.1, 0.1))(x, t)
    assert x0.abs().max() <= 0.1 and (x0.abs() == 0.1).any()
    alpha, sigma = (c.reshape(-1, 1, 1, 1) for c in sched.alpha_sigma(t))
    torch.testing.assert_close(alpha * x0 + sigma * eps, x, atol=1e-12, rtol=1e-12)


def test_guidance_without_labels_raises():
    sched = schedule_for()
    with pytest.raises(ValueError, match="class_labels and null_label"):
        Denoiser(toy_model(sched, "eps"), sched, "eps", guidance_scale=2.0)
    den = Denoiser(toy_model(sched, "eps"), sched, "eps", torch.tensor([1, 2, 3]), 2.0, null_label=0)
    with pytest.raises(ValueError, match=r"class_labels must have shape \(2,\)"):
        den(torch.zeros(2, 1, 2, 2), torch.tensor([5, 5]))
