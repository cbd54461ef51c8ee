"""Trainer state: optimiser moments come back in their parameters' memory layout."""

from __future__ import annotations

import torch
from torch import nn

from latentdiff.io.checkpoint import load_state, save_state
from latentdiff.training.trainer_state import load_optimizer_state


def _channels_last_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 4, 1))
    return net.to(memory_format=torch.channels_last)


def _steps(net: nn.Module, opt: torch.optim.Optimizer, steps: range) -> None:
    for step in steps:
        x = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        net(x.contiguous(memory_format=torch.channels_last)).square().mean().backward()
        opt.step()


def test_fused_adamw_restored_from_disk_continues_exactly_on_channels_last_weights(tmp_path):
    full = _channels_last_net()
    opt_full = torch.optim.AdamW(full.parameters(), lr=1e-2, fused=True)
    _steps(full, opt_full, range(6))

    part = _channels_last_net()
    opt_part = torch.optim.AdamW(part.parameters(), lr=1e-2, fused=True)
    _steps(part, opt_part, range(3))
    save_state({"weights": part.state_dict(), "opt": opt_part.state_dict()}, tmp_path, "state")

    saved = load_state(tmp_path, "state")
    resumed = _channels_last_net()
    resumed.load_state_dict(saved["weights"])
    opt_resumed = torch.optim.AdamW(resumed.parameters(), lr=1e-2, fused=True)
    load_optimizer_state(opt_resumed, saved["opt"])
    for p in resumed.parameters():
        for key in ("exp_avg", "exp_avg_sq"):
            assert opt_resumed.state[p][key].stride() == p.stride(), key
    _steps(resumed, opt_resumed, range(3, 6))
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_latest_step_reads_the_newest_complete_checkpoints_folder_name(tmp_path):
    from latentdiff.training.trainer_state import checkpoint_root, latest_step

    assert latest_step(tmp_path, "unet") is None
    root = checkpoint_root(tmp_path, "unet")
    for step, complete in ((500, True), (739, True), (900, False)):  # 900: an interrupted save
        (root / f"step_{step:08d}").mkdir(parents=True)
        if complete:
            (root / f"step_{step:08d}" / "trainer.json").write_text("{}")
    assert latest_step(tmp_path, "unet") == 739 and latest_step(tmp_path, "guide") is None
