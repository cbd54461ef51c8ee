"""Exponential moving average of model weights."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """Keeps θ_ema ← d·θ_ema + (1 − d)·θ after every optimiser step.

    With warm-up the decay ramps as d_k = min(d, (1 + k) / (10 + k)) (the schedule of TensorFlow's
    ExponentialMovingAverage with num_updates), so early averages are not dominated by the random init.
    Buffers (e.g. an EMA codebook) are copied, not averaged.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.shadow = {
            k: v.detach().clone().float() if v.is_floating_point() else v.detach().clone()
            for k, v in model.state_dict().items()
        }

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        params = dict(model.named_parameters())
        for name, value in model.state_dict().items():
            shadow = self.shadow[name]
            if name in params and value.is_floating_point():
                shadow.lerp_(value.float(), 1.0 - d)
            else:
                shadow.copy_(value)
        self.num_updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor], num_updates: int) -> None:
        missing = set(self.shadow) - set(state)
        if missing:
            raise KeyError(f"EMA state lacks {sorted(missing)[:5]}")
        for k in self.shadow:
            self.shadow[k].copy_(state[k])
        self.num_updates = num_updates

    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in self.shadow.items()})
