"""Min-SNR-γ weights and the weighted diffusion loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusion_toys import schedule_for

from latentdiff.diffusion import (
    Preconditioning,
    diffusion_loss,
    levels_at_sigmas,
    levels_at_timesteps,
    loss_weight,
)


def weight_at(sched, t, prediction, kind, gamma=5.0):
    return loss_weight(kind, Preconditioning(prediction), levels_at_timesteps(sched, t), gamma)


@pytest.mark.parametrize("gamma", [1.0, 5.0])
@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_min_snr_weights_match_their_closed_form(prediction, gamma):
    sched = schedule_for()
    t = torch.arange(1000)
    ab = sched.alphas_cumprod
    snr = ab / (1 - ab)
    clipped = torch.minimum(snr, torch.full_like(snr, gamma))
    expected = {"eps": clipped / snr, "v": clipped / (snr + 1), "x0": clipped}[prediction]
    weight = weight_at(sched, t, prediction, "min_snr", gamma)
    assert weight.dtype == torch.float32 and weight.shape == (1000,)
    torch.testing.assert_close(weight, expected.float())
    # high-noise steps keep full weight for eps, low-noise steps are down-weighted
    if prediction == "eps":
        assert weight[-1] == 1.0 and weight[0] < 0.01


def test_min_snr_with_zero_terminal_snr_is_finite():
    sched = schedule_for(zero_terminal_snr=True)
    t = torch.tensor([0, 500, 999])
    assert weight_at(sched, t, "eps", "min_snr")[-1] == 1.0  # limit of min(SNR, γ)/SNR as SNR → 0
    assert weight_at(sched, t, "v", "min_snr")[-1] == 0.0
    assert torch.equal(weight_at(sched, t, "v", "uniform"), torch.ones(3))


def test_diffusion_loss_is_the_weighted_mean_of_per_sample_mse():
    g = torch.Generator().manual_seed(0)
    out, target = torch.randn(4, 3, 5, 5, generator=g), torch.randn(4, 3, 5, 5, generator=g)
    w = torch.tensor([0.5, 1.0, 2.0, 0.0])
    per_sample = ((out - target) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(diffusion_loss(out, target, w), (w * per_sample).sum() / 4)
    torch.testing.assert_close(diffusion_loss(out, target), F.mse_loss(out, target))
    assert diffusion_loss(out.bfloat16(), target.bfloat16(), w).dtype == torch.float32
    with pytest.raises(ValueError, match=r"weights must have shape \(4,\)"):
        diffusion_loss(out, target, torch.ones(3))


def test_edm_weighting_is_lambda_times_c_out_squared():
    """λ(σ) = (σ² + σ_d²)/(σ σ_d)² on D's error is exactly 1 on F under EDM preconditioning
    (Karras et al. 2022, sec. 5), (σ² + σ_d²)/σ_d² under ε-prediction (c_out = −σ)."""
    sigmas = torch.tensor([0.01, 0.3, 1.0, 20.0], dtype=torch.float64)
    levels = levels_at_sigmas(sigmas)
    d = 0.5
    torch.testing.assert_close(loss_weight("edm", Preconditioning("edm", d), levels), torch.ones(4))
    expected = ((sigmas**2 + d**2) / d**2).float()
    got = loss_weight("edm", Preconditioning("eps", d), levels)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)
    # min-SNR on an EDM network: min(SNR, γ)·c_out², SNR = 1/σ²
    c_out_sq = (sigmas * d) ** 2 / (sigmas**2 + d**2)
    want = (torch.clamp(1 / sigmas**2, max=5.0) * c_out_sq).float()
    got = loss_weight("min_snr", Preconditioning("edm", d), levels)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
