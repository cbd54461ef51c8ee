"""Run `latentdiff <arguments>` in this process, as the tests' stand-in for a real command that dies.

Test-only hooks, read from the environment so that they also reach processes started by torchrun:

- `STAGE_RUN_KILL_AT=N`: the process SIGKILLs itself just before the training loop runs step N (0-based),
  i.e. after N optimiser steps, with nothing flushed or cleaned up (as `kill -9` would).
- `STAGE_RUN_KILL_RANK=R`: only the process of rank R does so (default: every rank).
- `STAGE_RUN_KILL_TASK=NAME`: only in the trainer of that task (`autoencoder`, `unet`): a command that
  trains both stages is killed in the one named.
- `STAGE_RUN_KILL_ONCE=PATH`: only if PATH does not exist yet; it is created just before the kill, so a
  run restarted by torchrun's `--max-restarts` passes step N the second time.

Intra-op threads are pinned to one: the models are tiny and the test machine is shared.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch

from latentdiff.cli import main
from latentdiff.training.loop import Trainer


def _install_kill_hook(kill_at: int) -> None:
    only_rank = os.environ.get("STAGE_RUN_KILL_RANK")
    only_task = os.environ.get("STAGE_RUN_KILL_TASK")
    once = os.environ.get("STAGE_RUN_KILL_ONCE")
    train_step = Trainer._train_step

    def _train_step(self: Trainer, step: int, *args, **kwargs):
        wanted = only_rank is None or int(only_rank) == self.dist.rank
        wanted &= only_task is None or only_task == self.task.name
        if step == kill_at and wanted and not (once and Path(once).exists()):
            if once:
                Path(once).touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return train_step(self, step, *args, **kwargs)

    Trainer._train_step = _train_step


if __name__ == "__main__":
    torch.set_num_threads(1)
    if "STAGE_RUN_KILL_AT" in os.environ:
        _install_kill_hook(int(os.environ["STAGE_RUN_KILL_AT"]))
    sys.exit(main(sys.argv[1:]))
