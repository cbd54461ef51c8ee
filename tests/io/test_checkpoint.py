"""Checkpoints: atomic under kill -9, never unpickled, nested state round trip."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from latentdiff.io.checkpoint import (
    CheckpointError,
    load_model_folder,
    load_state,
    load_tensors,
    refuse_pickle,
    save_model_folder,
    save_state,
)


def test_model_folder_round_trip_is_bit_exact(tmp_path):
    state = {"w": torch.randn(3, 4), "b": torch.arange(5), "h": torch.randn(2).to(torch.bfloat16)}
    ema = {k: v.clone() for k, v in state.items()}
    save_model_folder(tmp_path / "m", {"format": "x", "n": 3}, state, ema)
    cfg, loaded = load_model_folder(tmp_path / "m")
    assert cfg == {"format": "x", "n": 3}
    assert all(torch.equal(loaded[k], state[k]) and loaded[k].dtype == state[k].dtype for k in state)
    assert load_model_folder(tmp_path / "m", weights="auto")[1].keys() == ema.keys()


def test_nested_state_round_trip(tmp_path):
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.randn(3))], lr=1e-3, betas=(0.8, 0.9))
    opt.param_groups[0]["params"][0].grad = torch.ones(3)
    opt.step()
    obj = {"opt": opt.state_dict(), "tuple": (1, 2.5, "a", None), "int_keys": {3: torch.ones(2)}}
    save_state(obj, tmp_path, "s")
    back = load_state(tmp_path, "s")
    assert back["tuple"] == (1, 2.5, "a", None)
    assert torch.equal(back["int_keys"][3], torch.ones(2))
    assert back["opt"]["param_groups"][0]["betas"] == (0.8, 0.9)
    assert torch.equal(back["opt"]["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin", ".pth"])
def test_pickle_checkpoints_are_refused(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    torch.save({"w": torch.ones(1)}, path)
    with pytest.raises(CheckpointError, match="refusing to load.*pickle.*convert it once to safetensors"):
        load_tensors(path)


def test_pickle_disguised_as_safetensors_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    torch.save({"w": torch.ones(1)}, path)  # a zip/pickle archive behind a harmless name
    with pytest.raises(CheckpointError, match="refusing to load"):
        refuse_pickle(path)


def test_missing_and_damaged_files_name_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="model folder not found: .*nowhere"):
        load_model_folder(tmp_path / "nowhere")
    save_model_folder(tmp_path / "m", {"a": 1}, {"w": torch.ones(2)})
    (tmp_path / "m" / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model_folder(tmp_path / "m")


def test_save_killed_midway_leaves_previous_checkpoint_loadable(tmp_path):
    """A process saving large checkpoints in a loop is killed with SIGKILL at arbitrary moments."""
    target = tmp_path / "model"
    save_model_folder(target, {"version": -1}, {"w": torch.full((256, 1024), -1.0)})
    script = textwrap.dedent(f"""
        import torch
        from latentdiff.io.checkpoint import save_model_folder
        i = 0
        while True:
            w = torch.full((2048, 2048), float(i))
            save_model_folder({str(target)!r}, {{"version": i}}, {{"w": w}}, {{"w": w}})
            i += 1
    """)
    for delay in (0.6, 1.1, 1.7):
        proc = subprocess.Popen([sys.executable, "-c", script])
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        cfg, state = load_model_folder(target)
        # the folder is always one complete version: its config and its weights agree
        assert torch.all(state["w"] == float(cfg["version"]))


def test_safetensors_whose_header_length_starts_with_0x80_is_accepted(tmp_path):
    """The first byte of a safetensors file is the low byte of its header length; 0x80 is not pickle."""
    from safetensors.torch import save_file

    for n in range(1, 400):  # find a tensor name length that puts 0x80 in the first byte
        path = tmp_path / "m.safetensors"
        save_file({"w" * n: torch.ones(1)}, str(path))
        if path.read_bytes()[0] == 0x80:
            break
    else:
        pytest.fail("no header length with low byte 0x80 found")
    refuse_pickle(path)
    assert torch.equal(load_tensors(path)["w" * n], torch.ones(1))
