"""Training-time timestep sampling."""

from __future__ import annotations

import torch
from diffusion_toys import schedule_for

from latentdiff.diffusion import sample_timesteps


def test_uniform_timesteps_cover_the_range_evenly_and_follow_the_generator():
    sched = schedule_for(num_timesteps=10)
    t = sample_timesteps(50_000, sched, torch.Generator().manual_seed(0))
    assert t.dtype == torch.int64 and t.shape == (50_000,)
    counts = torch.bincount(t, minlength=10).double()
    assert counts.numel() == 10  # nothing outside [0, T)
    chi2 = ((counts - 5000) ** 2 / 5000).sum().item()
    assert chi2 < 30  # 9 degrees of freedom; p ≈ 4e-4
    again = sample_timesteps(50_000, 10, torch.Generator().manual_seed(0), device="cpu")
    assert torch.equal(t, again)
    assert not torch.equal(t, sample_timesteps(50_000, 10, torch.Generator().manual_seed(1)))
