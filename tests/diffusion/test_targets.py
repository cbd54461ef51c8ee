"""Training targets and the eps / v / x0 conversions."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler
from diffusion_toys import schedule_for

from latentdiff.diffusion import predict_x0_eps, training_target


@pytest.mark.parametrize("zero_snr", [False, True])
@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_conversions_invert_the_training_target_at_every_t(prediction, zero_snr):
    sched = schedule_for("scaled_linear", beta_start=0.00085, beta_end=0.012, zero_terminal_snr=zero_snr)
    g = torch.Generator().manual_seed(0)
    # eps-prediction cannot recover x0 where ᾱ = 0 (Lin et al. 2024): leave a zero-SNR last step out.
    last = sched.num_timesteps - (1 if zero_snr and prediction == "eps" else 0)
    t = torch.arange(last)
    z0, noise = (torch.randn(len(t), 2, 3, generator=g, dtype=torch.float64) for _ in range(2))
    x_t = sched.add_noise(z0, noise, t)
    target = training_target(prediction, z0, noise, sched, t)
    x0, eps = predict_x0_eps(target, x_t, t, sched, prediction)
    torch.testing.assert_close(x0, z0, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(eps, noise, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_any_output_gives_a_pair_consistent_with_x_t(prediction):
    """Whatever the network outputs, x_t = α x̂_0 + σ ε̂ (the pair lies on the forward process)."""
    sched = schedule_for()
    t = torch.arange(0, 1000, 7)
    x_t, out = torch.randn(len(t), 4, dtype=torch.float64), torch.randn(len(t), 4, dtype=torch.float64)
    x0, eps = predict_x0_eps(out, x_t, t, sched, prediction)
    alpha, sigma = (c[:, None] for c in sched.alpha_sigma(t))
    torch.testing.assert_close(alpha * x0 + sigma * eps, x_t, atol=1e-10, rtol=1e-10)


def test_v_target_matches_diffusers_velocity():
    sched = schedule_for()
    ref = DDPMScheduler()
    ref.alphas_cumprod = sched.alphas_cumprod.clone()
    t = torch.tensor([0, 3, 400, 999])
    z0, noise = torch.randn(4, 2, 2, dtype=torch.float64), torch.randn(4, 2, 2, dtype=torch.float64)
    expected = ref.get_velocity(z0, noise, t)
    torch.testing.assert_close(training_target("v", z0, noise, sched, t), expected, atol=1e-14, rtol=0)


def test_targets_keep_the_input_dtype_and_reject_unknown_predictions():
    sched = schedule_for()
    z0 = torch.randn(2, 3, dtype=torch.bfloat16)
    t = torch.tensor([1, 500])
    assert training_target("v", z0, z0, sched, t).dtype == torch.bfloat16
    x0, eps = predict_x0_eps(z0, z0.float(), t, sched, "eps")
    assert x0.dtype == eps.dtype == torch.float32
    with pytest.raises(ValueError, match="'eps', 'v', 'x0'"):
        training_target("epsilon", z0, z0, sched, t)
    with pytest.raises(ValueError, match="does not match"):
        predict_x0_eps(z0, torch.zeros(2, 4), t, sched, "eps")
