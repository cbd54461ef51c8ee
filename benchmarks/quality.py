"""Samples per minute, by the standard protocol: Fashion-MNIST class-conditional FID of N = 10,000 generated
images (balanced classes) against the 10,000 test images, KID alongside, and the real-vs-real floor (10,000
train against the 10,000 test images) in the same table, for a recipe trained in a wall-clock budget.

    python benchmarks/quality.py --recipe demo --minutes 15          # one point; merges into results
    python benchmarks/quality.py --recipe demo_edm --minutes 15 --n 2000
    python benchmarks/quality.py --run runs/demo                     # score `make demo`'s own run

With `--run RUN` nothing is trained: a run that `latentdiff train --data fashion-mnist --minutes M` made
(`make demo`'s runs/demo) is scored as the `train` recipe at its budget, its minutes read from
RUN/minutes.json (the whole command: probe, both stages, encoding, guide and its own evaluation) — one run
then answers both "what does the demo take" and "what does it score at N = 10,000". `--label NAME --how TEXT`
keeps such a point apart from the `train` curve (a run put together from parts of others, a variant of the
plan), with how it was made stated in the point.

A point = one recipe trained from scratch for `--minutes` of wall clock, both stages included (Stage 1, its
latent statistics, the encoding and Stage 2, each stage's cosine schedule fitted to its share), then
evaluated: FID/KID at N with the sampler, steps and guidance stated, the floor at the same N, the trained
work (steps × batch of each stage) next to every number — a slower or busier machine trains fewer steps in
the same time, so the work is the reproducible quantity and the minutes the budget. Reference features are
cached under $LATENTDIFF_DATA/fid_stats. Writes benchmarks/results/quality.json (points of several runs
merged, keyed by recipe and budget), a sample grid per point, the FID-against-minutes plot, and regenerates
docs/benchmarks.md.

Recipes (`RECIPES`): `demo` — today's demo (KL f = 4 autoencoder, class-conditional U-Net, VP-ε with min-SNR
weights, 20 % / 53 % of the budget for the stages as the demo's 3 / 8 of 15 minutes); `demo_edm` — the same
with EDM training (Karras et al. 2022: preconditioning, log-normal σ, EDM weights); `train` — what
`latentdiff train --data fashion-mnist --minutes M` does: its speed probe and plan (presets, Stage 1 share,
EDM Stage 2, each schedule fitted to its time), without its own shorter evaluation.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import re
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, RUNS, git_commit, machine, read_result, regenerate_docs, setup, write_result  # noqa: E402

from latentdiff import demo  # noqa: E402
from latentdiff.data.load import load_dataset  # noqa: E402
from latentdiff.evaluation import evaluate_generation, fid_floor  # noqa: E402
from latentdiff.figures import class_grid  # noqa: E402
from latentdiff.metrics.inception import InceptionFeatures  # noqa: E402
from latentdiff.pipeline import GUIDE_FOLDER, LatentDiffusionPipeline  # noqa: E402
from latentdiff.training.planner import EVAL_SAMPLER, EVAL_SAMPLER_OPTS, EVAL_STEPS  # noqa: E402
from latentdiff.training.run import train_autoencoder, train_diffusion  # noqa: E402
from latentdiff.training.trainer_state import latest_step, snapshot_record, trained_step  # noqa: E402
from latentdiff.workflow import guide_stage_of, plan_run, stages_of  # noqa: E402

# the same sampler as `latentdiff train`'s own evaluation
SAMPLER, STEPS, SAMPLER_OPTS = EVAL_SAMPLER, EVAL_STEPS, EVAL_SAMPLER_OPTS
SHARES = (3.0 / 15, 8.0 / 15)  # the demo's minutes per stage out of its 15


def _budgeted(stage, minutes: float, seed: int):
    train = dataclasses.replace(
        stage.train, steps=1_000_000, max_minutes=minutes, fit_to_time=True, seed=seed, checkpoint_every=1000
    )
    return dataclasses.replace(stage, train=train)


def recipe_demo(minutes: float, seed: int, run_dir: Path | None = None):
    ae, dm = demo.autoencoder_stage("full"), demo.diffusion_stage("full")
    return _budgeted(ae, SHARES[0] * minutes, seed), _budgeted(dm, SHARES[1] * minutes, seed), 2.0, None


def recipe_demo_edm(minutes: float, seed: int, run_dir: Path | None = None):
    ae, dm, guidance, _ = recipe_demo(minutes, seed)
    edm = dataclasses.replace(
        dm.diffusion, prediction="edm", noise_sampling="log_normal", loss_weighting="edm"
    )
    return ae, dataclasses.replace(dm, diffusion=edm), guidance, None


def recipe_train(minutes: float, seed: int, run_dir: Path | None = None):
    """The product's plan for this budget (probe included in the budget, as `latentdiff train` counts it),
    its autoguidance guide included."""
    assert run_dir is not None
    plan = plan_run("fashion-mnist", run_dir, minutes, None, None, False, True, torch.device("cpu"), None)
    ae, dm = stages_of(plan, seed, "cpu")
    return ae, dm, 2.0, guide_stage_of(plan, seed, "cpu")


RECIPES = {"demo": recipe_demo, "demo_edm": recipe_demo_edm, "train": recipe_train}


def _plan(run_dir: Path) -> dict | None:
    """The plan `latentdiff train` kept in the run folder (the `train` recipe only)."""
    path = run_dir / "plan.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def train_recipe(recipe: str, minutes: float, seed: int) -> tuple[Path, dict, float]:
    """Trains a recipe from scratch; returns its run folder, its minutes and the guidance scale."""
    run_dir = RUNS / "quality" / f"{recipe}_{minutes:g}min"
    start = time.perf_counter()
    ae_stage, dm_stage, guidance, guide_stage = RECIPES[recipe](minutes, seed, run_dir)
    train_autoencoder(ae_stage, run_dir, overwrite=True, progress=False)
    stage1 = (time.perf_counter() - start) / 60
    train_diffusion(dm_stage, run_dir, overwrite=True, progress=False)
    if guide_stage is not None:
        train_diffusion(guide_stage, run_dir, progress=False, folder=GUIDE_FOLDER)
    timing = {"training_minutes": (time.perf_counter() - start) / 60, "stage1_minutes": stage1}
    return run_dir, timing, guidance


def trained_run(run_dir: Path) -> tuple[dict, float]:
    """A run `latentdiff train --data fashion-mnist --minutes M` made: its budget and minutes per phase."""
    request = _plan(run_dir) or {}
    if request.get("data") != "fashion-mnist" or not request.get("minutes"):
        raise SystemExit(f"--run {run_dir}: not a time-budgeted `latentdiff train --data fashion-mnist` run")
    phases = json.loads((run_dir / "minutes.json").read_text())
    timing = {
        "budget_minutes": float(request["minutes"]),
        "training_minutes": phases["total"] - phases.get("evaluation", 0.0),
        "stage1_minutes": phases.get("stage1", 0.0),
        "command_minutes": phases["total"],
        "minutes_per_phase": {k: v for k, v in phases.items() if k not in ("total", "sessions")},
        "trained_by": f"latentdiff train --data fashion-mnist --minutes {request['minutes']:g}",
    }
    return timing, 2.0


def measure(
    recipe: str,
    minutes: float,
    n: int,
    seed: int,
    extractor: InceptionFeatures,
    run: Path | None = None,
    rfid: bool = False,
) -> dict:
    if run is None:
        run_dir, timing, guidance = train_recipe(recipe, minutes, seed)
        timing = {"budget_minutes": minutes, **timing}
    else:
        run_dir = run
        timing, guidance = trained_run(run)
        minutes = timing["budget_minutes"]
    pipe = LatentDiffusionPipeline.from_pretrained(run_dir)
    config, plan = yaml.safe_load((run_dir / "config.yaml").read_text()), _plan(run_dir)
    kind = "auto" if pipe.guide is not None else "cfg"
    train = load_dataset("fashion-mnist", "train", 32, 1)
    test = load_dataset("fashion-mnist", "test", 32, 1)
    eval_start = time.perf_counter()
    fid = evaluate_generation(
        pipe,
        test,
        n,
        STEPS,
        SAMPLER,
        guidance,
        n,
        seed,
        extractor=extractor,
        progress=False,
        reconstruction=rfid,
        guidance=kind,
        sampler_opts=SAMPLER_OPTS,
    )
    fid["floor_real_vs_real"] = fid_floor(train, test, n, extractor, progress=False)
    labels = [c for c in range(10) for _ in range(8)]
    grid = pipe(
        num_images=80,
        steps=STEPS,
        sampler=SAMPLER,
        **SAMPLER_OPTS,
        guidance_scale=guidance,
        class_labels=labels,
        seed=seed,
        output_type="pt",
        guidance=kind,
    )
    figure = f"quality_{re.sub(r'[^A-Za-z0-9]+', '_', recipe).strip('_')}_{minutes:g}min.png"
    class_grid(
        grid,
        pipe.class_names,
        RESULTS / figure,
        cols=8,
        title=f"{recipe}, {minutes:g} min: FID {fid['fid']:.1f} at N = {n}",
    )
    return {
        "recipe": recipe,
        **timing,
        "evaluation_minutes": (time.perf_counter() - eval_start) / 60,
        "work": {
            "autoencoder_steps": latest_step(run_dir, "autoencoder"),
            "autoencoder_batch": config["autoencoder_stage"]["train"]["batch_size"],
            "diffusion_steps": latest_step(run_dir, "unet"),
            "diffusion_batch": config["diffusion_stage"]["train"]["batch_size"],
            **({"guide_steps": trained_step(run_dir, GUIDE_FOLDER)} if pipe.guide is not None else {}),
            # the guide is the U-Net's own EMA at that step, not a model trained apart
            **({"guide_snapshot": True} if snapshot_record(run_dir / GUIDE_FOLDER) else {}),
        },
        "models": {
            "autoencoder_params_m": sum(p.numel() for p in pipe.autoencoder.parameters()) / 1e6,
            "backbone_params_m": sum(p.numel() for p in pipe.backbone.parameters()) / 1e6,
            "latent_shape": list(pipe.latent_shape),
            # the sizes the plan chose
            **(
                {"autoencoder_preset": plan["autoencoder"], "backbone_preset": plan["backbone"]}
                if plan
                else {}
            ),
        },
        # what the plan's probe measured (training images/s per preset): how fast this machine was at the
        # time — the same command on a machine half as fast trains half the steps
        **({"probe_images_per_s": plan["speeds"]} if plan else {}),
        "fid": fid,
        "figure": figure,
        "commit": git_commit(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def plot(points: list[dict]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for recipe in sorted({p["recipe"] for p in points}):
        rows = sorted((p for p in points if p["recipe"] == recipe), key=lambda p: p["budget_minutes"])
        ax.plot([p["budget_minutes"] for p in rows], [p["fid"]["fid"] for p in rows], "o-", label=recipe)
    floors = {p["fid"]["num_fake"]: p["fid"]["floor_real_vs_real"] for p in points}
    for n, floor in floors.items():
        ax.axhline(floor, ls=":", c="grey", label=f"real-vs-real floor, N = {n}")
    ax.set_xlabel("budget (minutes of wall clock, both stages)")
    ax.set_ylabel("FID")
    ax.set_title("Fashion-MNIST, class-conditional")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes: hides no point
    fig.tight_layout()
    name = "quality_fid_vs_minutes.png"
    fig.savefig(RESULTS / name, dpi=110)
    plt.close(fig)
    return name


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="demo")
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument(
        "--n", type=int, default=10_000, help="generated and reference images (standard: 10,000)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run", type=Path, help="score this `latentdiff train` run instead of training one")
    parser.add_argument("--label", help="with --run: the point's name in the table (default: train)")
    parser.add_argument("--how", help="with --label: how the scored run was made, kept in the point")
    parser.add_argument(
        "--rfid",
        action="store_true",
        help="also the autoencoder's rFID at the same N (what Stage 1 alone costs; N more Inception passes)",
    )
    args = parser.parse_args()
    setup()
    torch.manual_seed(args.seed)
    if (args.label or args.how) and args.run is None:
        parser.error("--label and --how name a scored --run")
    if args.run is not None:
        args.recipe = args.label or "train"
    point = measure(args.recipe, args.minutes, args.n, args.seed, InceptionFeatures(), args.run, args.rfid)
    if args.how:
        point["how"] = args.how
    args.minutes = point["budget_minutes"]
    old = read_result("quality") or {"points": []}
    points = [
        p
        for p in old["points"]
        if (p["recipe"], p["budget_minutes"], p["fid"]["num_fake"]) != (args.recipe, args.minutes, args.n)
    ] + [point]
    write_result(
        "quality",
        {
            "benchmark": "quality",
            "protocol": "Fashion-MNIST 32 px, class-conditional, balanced classes; N generated vs N test",
            "points": points,
            "plot": plot(points),
            "machine": machine(),
        },
    )
    regenerate_docs()
    f = point["fid"]
    print(
        f"{args.recipe} {args.minutes:g} min: FID {f['fid']:.2f} (N = {f['num_fake']}, floor "
        f"{f['floor_real_vs_real']:.2f}), work {point['work']}"
    )


if __name__ == "__main__":
    main()
