"""Training-time timestep sampling."""

from __future__ import annotations

import torch
from torch import Tensor

from latentdiff.diffusion.schedule import NoiseSchedule


def sample_timesteps(
    batch: int,
    schedule_or_T: NoiseSchedule | int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Integer timesteps drawn uniformly from {0, …, T−1} (Ho et al. 2020, Algorithm 1), shape (batch,).

    Drawn on the generator's device (so a CPU generator gives the same values everywhere), then moved."""
    T = schedule_or_T.num_timesteps if isinstance(schedule_or_T, NoiseSchedule) else int(schedule_or_T)
    if batch < 1 or T < 1:
        raise ValueError(f"need batch >= 1 and T >= 1, got batch={batch}, T={T}")
    draw_device = generator.device if generator is not None else device
    t = torch.randint(0, T, (batch,), generator=generator, device=draw_device)
    return t.to(device) if device is not None else t
