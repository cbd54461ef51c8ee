"""Min-SNR-γ weights and the weighted diffusion loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusion_toys import schedule_for

from latentdiff.diffusion import diffusion_loss, loss_weight


@pytest.mark.parametrize("gamma", [1.0, 5.0])
@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_min_snr_weights_match_their_closed_form(prediction, gamma):
    sched = schedule_for()
    t = torch.arange(1000)
    ab = sched.alphas_cumprod
    snr = ab / (1 - ab)
    clipped = torch.minimum(snr, torch.full_like(snr, gamma))
    expected = {"eps": clipped / snr, "v": clipped / (snr + 1), "x0": clipped}[prediction]
    weight = loss_weight(sched, t, prediction, "min_snr", gamma)
    assert weight.dtype == torch.float32 and weight.shape == (1000,)
    torch.testing.assert_close(weight, expected.float())
    # high-noise steps keep full weight for eps, low-noise steps are down-weighted
    if prediction == "eps":
        assert weight[-1] == 1.0 and weight[0] < 0.01


def test_min_snr_with_zero_terminal_snr_is_finite():
    sched = schedule_for(zero_terminal_snr=True)
    t = torch.tensor([0, 500, 999])
    assert loss_weight(sched, t, "eps", "min_snr")[-1] == 1.0  # limit of min(SNR, γ)/SNR as SNR → 0
    assert loss_weight(sched, t, "v", "min_snr")[-1] == 0.0
    assert torch.equal(loss_weight(sched, t, "v", "uniform"), torch.ones(3))


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
