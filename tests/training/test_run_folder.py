"""A run folder one can trust (issue 12, findings 3-6), on tiny real models trained into real run folders:

- nothing trained is replaced without --overwrite or --resume, an autoencoder is copied into a run only
  after every check, the backbone records the autoencoder it was trained on and loading refuses another;
  a new run over an old one keeps none of the old run's checkpoints;
- one writer: a second training into a locked folder is refused naming the holder's PID; a lock left by
  a killed process is taken over;
- a refused command leaves the run folder byte for byte as it was;
- Stage 2 refuses an autoencoder whose latent statistics were never measured, and the command it names
  finishes it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from latentdiff.autoencoder.model import Autoencoder
from latentdiff.autoencoder.stats import apply_latent_stats
from latentdiff.cli import main
from latentdiff.io.autoencoder_record import RECORD_FILE
from latentdiff.io.checkpoint import CheckpointError, load_tensors, read_json, save_tensors
from latentdiff.pipeline import LatentDiffusionPipeline
from latentdiff.training import run as run_module
from latentdiff.training.run import train_autoencoder, train_diffusion
from latentdiff.training.run_folder import RunFolderError
from latentdiff.training.run_lock import LOCK_FILE, RunFolderLocked, RunLock
from latentdiff.training.trainer_state import checkpoint_root, list_checkpoints


def _root_conftest():
    """tests/conftest.py by path: under `pytest tests/` the module name `conftest` may be another folder's."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_root_conftest", Path(__file__).parents[1] / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tiny_autoencoder_stage = _root_conftest().tiny_autoencoder_stage
tiny_diffusion_stage = _root_conftest().tiny_diffusion_stage


def ae_stage(steps: int = 4, **train):
    stage = tiny_autoencoder_stage()
    cfg = dict(steps=steps, batch_size=16, checkpoint_every=2, log_every=2, keep_last=2)
    cfg.update(train)
    return dataclasses.replace(stage, stats_images=64, train=dataclasses.replace(stage.train, **cfg))


def dm_stage(steps: int = 2, **train):
    return tiny_diffusion_stage(
        **{"steps": steps, "batch_size": 16, "checkpoint_every": 2, "log_every": 2, **train}
    )


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones included) with the SHA-256 of its bytes."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def trained_ae(tmp_path_factory) -> Path:
    """A run folder with a finished tiny Stage 1 (4 steps, checkpoints at 2 and 4)."""
    run = tmp_path_factory.mktemp("trained_ae")
    train_autoencoder(ae_stage(), run, progress=False)
    return run


@pytest.fixture
def ae_run(trained_ae, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained_ae, run)
    return run


def other_autoencoder(folder: Path, in_channels: int = 1, seed: int = 5) -> Path:
    """An untrained but finished autoencoder (its latent statistics set) of the tiny layout."""
    torch.manual_seed(seed)
    ae = Autoencoder(
        dataclasses.replace(tiny_autoencoder_stage().model, in_channels=in_channels, resolution=8)
    )
    apply_latent_stats(ae, {"mean": 0.0, "std": 1.5, "num_images": 10})
    return ae.save_pretrained(folder)


# ------------------------------------------------------------------------ finding 3: no silent overwrites


def test_a_trained_autoencoder_is_replaced_only_with_overwrite_and_old_checkpoints_go(ae_run):
    before = snapshot(ae_run)
    with pytest.raises(RunFolderError, match=r"holds a trained autoencoder: pass --resume .* or --overwrite"):
        train_autoencoder(ae_stage(), ae_run, progress=False)
    assert snapshot(ae_run) == before  # the refusal changed nothing, not even config.yaml

    old = load_tensors(ae_run / "autoencoder" / "model.safetensors")
    # a new, shorter run over the old one: none of the old run's (later) checkpoints may survive it
    train_autoencoder(ae_stage(steps=1, checkpoint_every=0), ae_run, progress=False, overwrite=True)
    steps = [s for s, _ in list_checkpoints(checkpoint_root(ae_run, "autoencoder"))]
    assert steps == [1]
    new = load_tensors(ae_run / "autoencoder" / "model.safetensors")
    assert any(not torch.equal(old[k], new[k]) for k in old)
    # and a resume continues the new run (from its step 1, not from the old run's step 4)
    train_autoencoder(ae_stage(steps=2, checkpoint_every=0), ae_run, resume=True, progress=False)
    assert [s for s, _ in list_checkpoints(checkpoint_root(ae_run, "autoencoder"))] == [1, 2]


def test_resume_without_a_checkpoint_does_not_restart_over_trained_weights(ae_run):
    shutil.rmtree(ae_run / "trainer_state")
    before = snapshot(ae_run)
    with pytest.raises(RunFolderError, match="no checkpoint to continue from.*--overwrite"):
        train_autoencoder(ae_stage(), ae_run, resume=True, progress=False)
    assert snapshot(ae_run) == before


def test_train_diffusion_refuses_a_trained_backbone_without_resume_or_overwrite(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = snapshot(run)
    with pytest.raises(RunFolderError, match=r"unet holds a trained unet: pass --resume"):
        train_diffusion(dm_stage(), run, progress=False)
    assert snapshot(run) == before


def test_train_diffusion_overwrite_starts_the_backbone_again_without_the_old_runs_checkpoints(
    tiny_run, tmp_path
):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert [s for s, _ in list_checkpoints(checkpoint_root(run, "unet"))] == [10, 20]
    train_diffusion(dm_stage(steps=1, checkpoint_every=0), run, progress=False, overwrite=True)
    assert [s for s, _ in list_checkpoints(checkpoint_root(run, "unet"))] == [1]
    assert read_json(run / "unet" / RECORD_FILE) == read_json(tiny_run / "unet" / RECORD_FILE)
    LatentDiffusionPipeline.from_pretrained(run, device="cpu")


def test_autoencoder_is_copied_into_the_run_only_after_every_check(tmp_path):
    """An RGB autoencoder for the grey digits: refused before anything lands in the run folder."""
    other = other_autoencoder(tmp_path / "rgb_ae", in_channels=3)
    run = tmp_path / "run"
    with pytest.raises(ValueError, match=r"1 channel\(s\), but the autoencoder .*takes 3.*--channels 3"):
        train_diffusion(dm_stage(), run, autoencoder=other, progress=False)
    assert not run.exists()


def test_another_autoencoder_does_not_replace_the_runs_own_without_overwrite(ae_run, tmp_path):
    other = other_autoencoder(tmp_path / "other_ae")
    before = snapshot(ae_run)
    with pytest.raises(
        RunFolderError, match=r"holds another trained autoencoder than .*other_ae.*--overwrite"
    ):
        train_diffusion(dm_stage(), ae_run, autoencoder=other, progress=False)
    assert snapshot(ae_run) == before


def test_backbone_records_its_autoencoder_and_loading_refuses_another(tiny_run, tmp_path, caplog):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    record = read_json(run / "unet" / RECORD_FILE)
    assert record == {"autoencoder_hash": Autoencoder.from_pretrained(run / "autoencoder").hash()}
    last = sorted((run / "trainer_state" / "unet").iterdir())[-1]
    assert read_json(last / "model" / RECORD_FILE) == record  # checkpoints carry it too
    LatentDiffusionPipeline.from_pretrained(run, device="cpu")  # the pair as trained loads

    # the autoencoder replaced by another one of the same layout: sampling would decode wrong images
    weights = load_tensors(run / "autoencoder" / "ema.safetensors")
    save_tensors({k: v + 0.01 if v.is_floating_point() else v for k, v in weights.items()},
                 run / "autoencoder" / "ema.safetensors")  # fmt: skip
    with pytest.raises(CheckpointError) as err:
        LatentDiffusionPipeline.from_pretrained(run, device="cpu")
    message = str(err.value)
    assert f"{run / 'unet'} was trained on another autoencoder than {run / 'autoencoder'}" in message
    assert record["autoencoder_hash"][:12] in message and "--overwrite" in message
    with pytest.raises(CheckpointError, match="trained on another autoencoder"):
        LatentDiffusionPipeline.from_pretrained(run, device="cpu", weights="model")

    # a run saved before backbones recorded their autoencoder loads, with a warning saying it is unchecked
    (run / "unet" / RECORD_FILE).unlink()
    with caplog.at_level(logging.WARNING, logger="latentdiff"):
        LatentDiffusionPipeline.from_pretrained(run, device="cpu")
    assert "does not record which autoencoder it was trained on" in caplog.text


def test_resuming_a_backbone_on_another_autoencoder_is_refused(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    shutil.rmtree(run / "autoencoder")
    other_autoencoder(run / "autoencoder")  # e.g. train-autoencoder --overwrite after Stage 2
    before = snapshot(run)
    with pytest.raises(CheckpointError, match=r"trainer_state/unet/step_\d+/model was trained on another"):
        train_diffusion(dm_stage(steps=30), run, resume=True, progress=False)
    assert snapshot(run) == before


# ---------------------------------------------------------------------------------- finding 4: one writer

HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from latentdiff.training.run_lock import RunLock
    RunLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(120)
    """
)


def test_a_second_training_is_refused_naming_the_pid_and_a_killed_holders_lock_is_taken_over(
    tmp_path, caplog
):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderLocked) as err:
            train_autoencoder(ae_stage(), run, progress=False)
        assert f"PID {holder.pid} on host {socket.gethostname()}" in str(err.value)
        assert snapshot(run) == {LOCK_FILE: snapshot(run)[LOCK_FILE]}  # nothing but the holder's lock file
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == holder.pid  # left behind by kill -9

    with caplog.at_level(logging.WARNING, logger="latentdiff"):
        train_autoencoder(ae_stage(steps=1), run, progress=False)
    assert f"taking over the lock of {run}" in caplog.text and f"PID {holder.pid}" in caplog.text
    assert (run / "autoencoder" / "model.safetensors").is_file()
    assert not (run / LOCK_FILE).exists()  # released when the training ended


def test_the_lock_is_held_during_training_and_released_on_errors(tmp_path, monkeypatch):
    run = tmp_path / "run"
    seen = []

    def finalize(folder, *args, **kwargs):
        holder = json.loads((run / LOCK_FILE).read_text())
        seen.append(holder)
        with pytest.raises(RunFolderLocked, match=f"PID {os.getpid()}"):
            RunLock(run).acquire()  # a second writer in this very process is refused as well
        raise KeyboardInterrupt("Ctrl-C while measuring the latent statistics")

    monkeypatch.setattr(run_module, "finalize_autoencoder", finalize)
    with pytest.raises(KeyboardInterrupt):
        train_autoencoder(ae_stage(steps=1), run, progress=False)
    assert seen and seen[0]["pid"] == os.getpid() and seen[0]["host"] == socket.gethostname()
    assert not (run / LOCK_FILE).exists()
    RunLock(run).acquire().release()  # free again


def test_a_lock_without_flock_is_judged_by_pid_and_host(tmp_path):
    """A lock file whose holder is gone, as written on a file system without flock: taken over; one whose
    holder is alive (this process, as a stand-in) or on another host: respected."""
    run = tmp_path / "run"
    run.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = socket.gethostname()
    assert RunLock._stale({"pid": dead.pid, "host": here})
    assert not RunLock._stale({"pid": os.getpid(), "host": here})
    assert not RunLock._stale({"pid": dead.pid, "host": here + "-elsewhere"})


# ------------------------------------------------------------------- finding 5: a refusal changes nothing


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"precision": "fp16", "device": "cpu"}, "fp16 is not supported on cpu"),  # a CPU premise
        ({"batch_size": 4000}, "fewer than one batch of 4000"),
        ("resolution", r"data.resolution=7: .* f=2, so the image side must be a multiple of 2"),
    ],
)
@pytest.mark.parametrize("where", ["new folder", "trained folder, --overwrite"])
def test_refused_stage1_leaves_the_run_folder_as_it_was(ae_run, tmp_path, change, message, where):
    run = tmp_path / "new" if where == "new folder" else ae_run
    stage = ae_stage()
    if change == "resolution":
        stage = dataclasses.replace(stage, data=dataclasses.replace(stage.data, resolution=7))
    else:
        stage = dataclasses.replace(stage, train=dataclasses.replace(stage.train, **change))
    before = snapshot(run)
    with pytest.raises(ValueError, match=message):
        train_autoencoder(
            stage, run, progress=False, **({} if where == "new folder" else {"overwrite": True})
        )
    assert snapshot(run) == before
    assert run.exists() == (where != "new folder")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"precision": "fp16", "device": "cpu"}, "fp16 is not supported on cpu"),  # a CPU premise
        ({"batch_size": 4000}, "fewer than one batch of 4000"),
        ("resolution", r"data.resolution=7: .* f=2"),
    ],
)
def test_refused_stage2_leaves_the_run_folder_as_it_was(ae_run, change, message):
    stage = dm_stage()
    if change == "resolution":
        stage = dataclasses.replace(stage, data=dataclasses.replace(stage.data, resolution=7))
    else:
        stage = dataclasses.replace(stage, train=dataclasses.replace(stage.train, **change))
    before = snapshot(ae_run)
    with pytest.raises(ValueError, match=message):
        train_diffusion(stage, ae_run, progress=False)
    assert snapshot(ae_run) == before


def test_a_changed_model_config_on_resume_is_refused_in_a_few_lines_naming_the_keys(ae_run):
    stage = ae_stage(steps=6)
    model = dataclasses.replace(stage.model, base_channels=8, latent_channels=2)
    before = snapshot(ae_run)
    with pytest.raises(RunFolderError) as err:
        train_autoencoder(dataclasses.replace(stage, model=model), ae_run, resume=True, progress=False)
    message = str(err.value)
    assert "base_channels: 16 in the checkpoint, 8 now" in message
    assert "latent_channels: 4 in the checkpoint, 2 now" in message
    assert "in 2 setting(s)" in message and len(message) < 800 and len(message.splitlines()) <= 5
    assert snapshot(ae_run) == before  # config.yaml not rewritten


# ------------------------------------------------------------- finding 6: Stage 2 needs a finished Stage 1


def test_stage2_refuses_an_unfinished_autoencoder_and_the_named_command_finishes_it(tmp_path, monkeypatch):
    run = tmp_path / "run"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt("Ctrl-C while measuring the latent statistics")

    with monkeypatch.context() as patch:
        patch.setattr(run_module, "finalize_autoencoder", interrupted)
        with pytest.raises(KeyboardInterrupt):
            train_autoencoder(ae_stage(), run, progress=False)
    assert read_json(run / "autoencoder" / "config.json")["latent_stats_images"] == 0

    before = snapshot(run)
    with pytest.raises(RunFolderError) as err:
        train_diffusion(dm_stage(), run, progress=False)
    message = str(err.value)
    assert "latent statistics were never measured" in message
    command = f"latentdiff train-autoencoder --out {run} --resume --config {run / 'config.yaml'}"
    assert f"`{command}`" in message
    assert snapshot(run) == before
    # the same refusal for the autoencoder given from another folder
    with pytest.raises(RunFolderError, match="never measured"):
        train_diffusion(dm_stage(), tmp_path / "other_run", autoencoder=run / "autoencoder", progress=False)
    assert not (tmp_path / "other_run").exists()

    # the named command finishes Stage 1 (no step left to train: it measures the statistics) ...
    code = main(["-q", *command.split()[1:]])
    assert code == 0
    assert read_json(run / "autoencoder" / "config.json")["latent_stats_images"] == 64
    assert [s for s, _ in list_checkpoints(checkpoint_root(run, "autoencoder"))] == [2, 4]
    # ... after which Stage 2 trains on it
    train_diffusion(dm_stage(), run, progress=False)
    assert (run / "unet" / RECORD_FILE).is_file()
