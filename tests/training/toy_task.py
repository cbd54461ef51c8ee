"""A tiny regression task that exercises every part of the training loop (used by the loop tests).

Run as a script it trains one run; options let tests kill it with SIGKILL at a chosen step, or make the
loss non-finite, and it writes the final parameters and per-step losses for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn

from latentdiff.io.checkpoint import save_model_folder
from latentdiff.training.config import TrainConfig
from latentdiff.training.loop import Trainer
from latentdiff.training.task import StepOutput


class ToyTask:
    name = "toy"

    def __init__(self, n: int = 96, dim: int = 8, kill_at: int = -1, nan_at: int = -1) -> None:
        g = torch.Generator().manual_seed(1234)
        self.x = torch.randn(n, dim, generator=g)
        self.y = self.x @ torch.randn(dim, 1, generator=g)
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(dim, 32), nn.SiLU(), nn.Dropout(0.0), nn.Linear(32, 1))
        self.kill_at, self.nan_at = kill_at, nan_at

    def extra_modules(self):
        return {}

    def num_items(self) -> int:
        return len(self.x)

    def get_batch(self, indices, device):
        return self.x[indices].to(device), self.y[indices].to(device)

    def phases(self, step):
        return ["model"]

    def phase_loss(self, phase, modules, batch, ctx, rng, step):
        if step == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        x, y = batch
        noisy = x + 0.1 * rng.randn(x.shape[1])
        loss = nn.functional.mse_loss(modules["model"](noisy), y)
        if step >= self.nan_at >= 0:
            loss = loss * float("nan")
        return StepOutput(loss, {"y_mean": y.mean()})

    def save_model(self, path, model_state, ema_state):
        save_model_folder(path, {"format": "toy"}, model_state, ema_state)

    def samples(self, model, step):
        return None

    def evaluate(self, model, step):
        return {}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--accum", type=int, default=1)
    ap.add_argument("--checkpoint-every", type=int, default=4)
    ap.add_argument("--kill-at", type=int, default=-1)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    task = ToyTask(kill_at=a.kill_at)
    cfg = TrainConfig(
        steps=a.steps,
        batch_size=a.batch,
        grad_accum=a.accum,
        lr=1e-2,
        warmup_steps=3,
        checkpoint_every=a.checkpoint_every,
        keep_last=3,
        log_every=1,
        ema_decay=0.9,
        device="cpu",  # kill -9/resume and DDP runs compare bit for bit, over gloo: pinned to the CPU
    )
    trainer = Trainer(task, cfg, a.run_dir, progress=False)
    history = trainer.fit(resume=a.resume)
    if a.out:
        rank = int(os.environ.get("RANK", "0"))
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        params = {k: v.tolist() for k, v in task.model.state_dict().items()}
        losses = [h["loss"] for h in history if "loss" in h]
        (out / f"rank{rank}.json").write_text(json.dumps({"params": params, "losses": losses}))


if __name__ == "__main__":
    sys.exit(main())
