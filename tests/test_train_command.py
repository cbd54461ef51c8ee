"""`latentdiff train`, the one command: it keeps to its budget, resumes across the stage boundary to the
weights of an uninterrupted run, refuses a changed plan on resume, and the README's own commands work on a
plain folder."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from latentdiff.io.checkpoint import load_tensors
from latentdiff.pipeline import LatentDiffusionPipeline
from latentdiff.training.run_folder import RunFolderError
from latentdiff.training.trainer_state import snapshot_record
from latentdiff.workflow import train_everything

ROOT = Path(__file__).resolve().parent.parent
STAGE_RUN = ROOT / "tests" / "training" / "stage_run.py"


@pytest.fixture(scope="module")
def flat_folder(tmp_path_factory) -> Path:
    """300 digits as 16×16 grey PNGs in one folder (no class sub-folders)."""
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("flat")
    images = load_digits().images[:300]
    for i, img in enumerate(images):
        pixels = (img / 16 * 255).astype(np.uint8)
        Image.fromarray(pixels, "L").resize((16, 16), Image.BILINEAR).save(folder / f"digit_{i:04d}.png")
    return folder


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory) -> Path:
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("classes")
    digits = load_digits()
    for i, (img, label) in enumerate(zip(digits.images[:300], digits.target[:300], strict=True)):
        (folder / f"d{label}").mkdir(exist_ok=True)
        Image.fromarray((img / 16 * 255).astype(np.uint8), "L").save(folder / f"d{label}" / f"{i:04d}.png")
    return folder


def _train(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(STAGE_RUN), "-q", "train", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        timeout=600,
    )


def test_the_plan_keeps_to_its_budget(tmp_path):
    torch.set_num_threads(2)
    # 1.5 minutes: the evaluation alone is ~0.7 (three Inception passes of 159 images at ~15 images/s)
    result = train_everything("digits", tmp_path / "run", minutes=1.5, progress=False)
    minutes = result.metrics["minutes"]
    assert minutes["total"] <= 1.65, minutes  # within 10 % of the budget, evaluation included
    assert result.metrics["steps"]["autoencoder"] > 100 and result.metrics["steps"]["diffusion"] > 100
    # the `tiny` U-Net is guided by its own EMA at GUIDE_SNAPSHOT of its steps, written during Stage 2
    assert result.plan.backbone == "tiny" and result.plan.guide_snapshot and result.plan.guide_minutes == 0
    snapshot = snapshot_record(tmp_path / "run" / "guide")
    assert snapshot["of"] == "unet" and snapshot["step"] == result.metrics["steps"]["guide"] > 20
    assert snapshot["step"] < 0.3 * result.metrics["steps"]["diffusion"]
    assert result.plan.conditional  # digits has classes
    assert LatentDiffusionPipeline.from_pretrained(tmp_path / "run").guide is not None
    assert result.metrics["fid"]["guidance"] == "autoguidance"
    report = result.report.read_text()
    for needle in (
        "What was chosen, and why",
        "measured images/s here",
        "PSNR",
        "real-vs-real floor",
        "N = ",
        "its autoguidance guide",
    ):
        assert needle in report
    for name in ("samples.png", "how_it_works.png", "plan.yaml", "metrics.json"):
        assert (tmp_path / "run" / name).is_file()


FIXED = ["--size", "tiny", "--steps", "30", "24", "--seed", "4"]


def test_resume_across_the_stage_boundary_gives_the_uninterrupted_weights(flat_folder, tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    done = _train("--data", str(flat_folder), "--out", str(whole), *FIXED)
    assert done.returncode == 0, done.stderr[-2000:]
    killed = _train(
        "--data",
        str(flat_folder),
        "--out",
        str(cut),
        *FIXED,
        env={"STAGE_RUN_KILL_AT": "10", "STAGE_RUN_KILL_TASK": "unet"},
    )
    assert killed.returncode == -9  # in Stage 2, after Stage 1 had finished
    assert (cut / "autoencoder").is_dir() and not (cut / "report.md").exists()
    resumed = _train("--data", str(flat_folder), "--out", str(cut), *FIXED, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for part in ("autoencoder/model.safetensors", "unet/model.safetensors", "guide/model.safetensors"):
        a, b = load_tensors(whole / part), load_tensors(cut / part)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    plan = yaml.safe_load((cut / "plan.yaml").read_text())
    assert plan["conditional"] is False and plan["channels"] == 1 and plan["resolution"] == 16
    assert "held out by path hash" in (cut / "report.md").read_text()

    # the same folder again: refused without --resume/--overwrite, and a changed plan on resume too
    before = sorted((p.relative_to(cut), p.stat().st_mtime_ns) for p in cut.rglob("*") if p.is_file())
    again = _train("--data", str(flat_folder), "--out", str(cut), *FIXED)
    assert again.returncode != 0 and "--resume to continue it or --overwrite" in again.stderr
    changed = _train(
        "--data",
        str(flat_folder),
        "--out",
        str(cut),
        "--size",
        "small",
        "--steps",
        "30",
        "24",
        "--seed",
        "4",
        "--resume",
    )
    assert changed.returncode != 0 and "size: 'tiny' → 'small'" in changed.stderr
    after = sorted((p.relative_to(cut), p.stat().st_mtime_ns) for p in cut.rglob("*") if p.is_file())
    assert after == before


def test_class_sub_folders_make_a_class_conditional_model(class_folder, tmp_path):
    r = train_everything(str(class_folder), tmp_path / "run", size="tiny", steps=(20, 20), progress=False)
    assert r.plan.conditional and r.plan.channels == 1 and r.plan.resolution == 8
    assert r.metrics["fid"]["num_fake"] == r.metrics["fid"]["num_real"] > 0
    with pytest.raises(RunFolderError, match="other settings"):
        train_everything(str(class_folder), tmp_path / "run", size="tiny", steps=(20, 21), resume=True)


def test_a_captioned_folder_makes_a_text_model_with_a_prompts_figure(flat_folder, tmp_path):
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    from sklearn.datasets import load_digits

    labels = load_digits().target[:300]
    lines = [
        json.dumps({"file_name": f"digit_{i:04d}.png", "text": [f"the digit {names[d]}", f"a {names[d]}"]})
        for i, d in enumerate(labels)
    ]
    data = tmp_path / "captioned"
    data.mkdir()
    for png in flat_folder.glob("*.png"):
        (data / png.name).write_bytes(png.read_bytes())
    (data / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    r = train_everything(str(data), tmp_path / "run", size="tiny", steps=(20, 16), progress=False)
    assert r.plan.text and not r.plan.conditional  # captions, no further flags
    run = tmp_path / "run"
    assert (run / "tokenizer.json").is_file() and (run / "text_encoder" / "model.safetensors").is_file()
    with Image.open(run / "prompts.png") as grid:
        assert grid.height > grid.width  # 16 labelled rows of 6 samples
    assert "![prompts](prompts.png)" in r.report.read_text()


def test_without_the_fid_weights_training_goes_on_and_the_report_says_so(
    flat_folder, tmp_path, monkeypatch, caplog, capsys
):
    """Missing FID weights are said before training, and the run still ends with its report (through the
    CLI, as on the GPU machine where this was found)."""
    import latentdiff.workflow as workflow
    from latentdiff.cli import main

    monkeypatch.setattr(
        workflow, "fid_weights_missing", lambda: "the FID Inception weights are not installed"
    )
    run = tmp_path / "run"
    with caplog.at_level("WARNING", logger="latentdiff"):
        code = main(
            ["train", "--data", str(flat_folder), "--out", str(run), "--size", "tiny", "--steps", "10", "10"]
        )
    assert code == 0
    assert "the report will have no FID" in caplog.text
    assert "FID not measured" in capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["fid"] is None and metrics["reconstruction"]["psnr"] > 0
    assert "FID not measured: the FID Inception weights are not installed" in (run / "report.md").read_text()


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Using it") : text.index("\n## ", text.index("## Using it") + 5)]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        commands += [line.strip() for line in block.splitlines() if line.strip().startswith("latentdiff ")]
    return commands


def test_the_readme_commands_work_on_a_plain_folder(flat_folder, tmp_path):
    commands = _readme_commands()
    assert commands[0].startswith("latentdiff train --data path/to/images") and len(commands) >= 8
    Image.new("L", (16, 16), 128).save(tmp_path / "photo.png")
    mask = Image.new("L", (16, 16), 0)
    mask.paste(255, (0, 0, 8, 16))
    mask.save(tmp_path / "mask.png")
    small = {  # the README's sizes and budgets, shrunk to a test's
        "--minutes 20": "--size tiny --steps 20 20",
        "--minutes 8": "--steps 10",
        "--steps 20000": "--steps 10",
        "--resolution 64": "--resolution 16",
        "--num-images 16": "--num-images 2 --steps 3",
        "--n 8": "--n 3 --steps 3",
    }
    ran = 0
    for line in commands:
        if "sd-vae" in line:  # needs Stable Diffusion's VAE on disk
            continue
        for a, b in small.items():
            line = line.replace(a, b)
        line = line.replace("path/to/images", str(flat_folder)).replace(
            "photo.png", str(tmp_path / "photo.png")
        )
        line = line.replace("mask.png", str(tmp_path / "mask.png"))
        line = re.sub(r"(runs|out)/", lambda m: f"{tmp_path}/{m.group(1)}/", line)
        if line.startswith(("latentdiff img2img", "latentdiff inpaint")):
            line += " --steps 3"
        args = shlex.split(line)[1:]
        proc = subprocess.run(
            [sys.executable, "-m", "latentdiff", "-q", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            timeout=600,
        )
        assert proc.returncode == 0, f"{line}\n{proc.stderr[-2000:]}"
        ran += 1
    assert ran == len(commands) - 1
    assert (tmp_path / "runs" / "mine" / "report.md").is_file() and (
        tmp_path / "runs" / "own" / "unet"
    ).is_dir()


def test_a_guide_needs_the_runs_model_and_its_noise_schedule(class_folder, tmp_path):
    import dataclasses

    from latentdiff.training.run import train_diffusion
    from latentdiff.workflow import guide_stage_of, plan_run

    run = tmp_path / "run"
    # `small`: a `tiny` U-Net has no guide to train (its own snapshot guides it)
    plan = plan_run(str(class_folder), run, None, "small", None, False, False, torch.device("cpu"), (20, 16))
    guide = guide_stage_of(plan, 0, "cpu")
    assert guide is not None and guide.train.steps == 2
    with pytest.raises(RunFolderError, match="no trained backbone yet"):
        train_diffusion(guide, run, progress=False, folder="guide")
    train_everything(str(class_folder), run, size="small", steps=(20, 16), progress=False, overwrite=True)
    other = dataclasses.replace(guide, diffusion=dataclasses.replace(guide.diffusion, prediction="v"))
    before = sorted(p.stat().st_mtime_ns for p in (run / "guide").rglob("*") if p.is_file())
    with pytest.raises(ValueError, match="prediction: run 'edm', guide 'v'"):
        train_diffusion(other, run, progress=False, folder="guide", resume=True)
    with pytest.raises(ValueError, match="a run folder's own part"):
        train_diffusion(guide, run, progress=False, folder="unet")
    # a snapshot of the model (`TrainConfig.snapshot_fraction`) must not land on the run's own parts either
    onto_model = dataclasses.replace(
        guide, train=dataclasses.replace(guide.train, snapshot_fraction=0.2, snapshot_folder="unet")
    )
    with pytest.raises(ValueError, match="train.snapshot_folder='unet' is a run folder's own part"):
        train_diffusion(onto_model, run, progress=False, resume=True)
    assert sorted(p.stat().st_mtime_ns for p in (run / "guide").rglob("*") if p.is_file()) == before
