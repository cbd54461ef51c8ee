"""Guidance of one trained model, measured: FID/KID at N for classifier-free guidance at several scales and
for autoguidance (Karras et al. 2024) with named guide models, same sampler, steps and seed for every row.

    python benchmarks/guidance.py --run RUN --label "15-min plan" --n 2000 cfg:1 cfg:1.5 cfg:2 \\
        --guide early=RUN/trainer_state/unet/step_00000500/model auto:2:early

    python benchmarks/guidance.py --run RUN --label "15-min plan" --n 2000 --guide tiny=RUN/guide \\
        --sampler edm_stochastic:20:s_churn=5 auto:2:tiny

A setting is `cfg:W` (w = 1 is the model alone) or `auto:W:GUIDE` (GUIDE one of the `--guide NAME=FOLDER`
backbone folders, its EMA weights). `--sampler NAME:STEPS[:OPT=VALUE,...]` (default dpmpp_2m:20) samples
every setting of the call with that sampler. `--weights model` samples the run's raw U-Net weights instead
of its EMA; `--average 2000,2500` the mean of its checkpoints' weights (of that kind) at those steps (a
crude post-hoc EMA: checkpoints written with `stage2_on_run.py every=K keep=M`). `--interval LO,HI` guides
only where LO < σ ≤ HI. The data set, resolution and channels are the run's (config.yaml). Rows merge into
benchmarks/results/guidance.json keyed by (label, setting, sampler, N, interval, weights) with the floor at
that N, and docs/benchmarks.md is regenerated.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from common import git_commit, machine, read_result, regenerate_docs, setup, write_result  # noqa: E402
from report import guidance_variant, sampler_text  # noqa: E402

from latentdiff.data.load import load_dataset  # noqa: E402
from latentdiff.diffusion import get_sampler  # noqa: E402
from latentdiff.diffusion.guidance import check_guidance_interval  # noqa: E402
from latentdiff.evaluation import evaluate_generation, fid_floor  # noqa: E402
from latentdiff.metrics.inception import InceptionFeatures  # noqa: E402
from latentdiff.nets.backbones import load_backbone  # noqa: E402
from latentdiff.pipeline import LatentDiffusionPipeline  # noqa: E402
from latentdiff.training.trainer_state import (  # noqa: E402
    checkpoint_root,
    latest_step,
    list_checkpoints,
    trained_step,
)

SAMPLER, STEPS = "dpmpp_2m", 20


def _sampler(spec: str) -> tuple[str, int, dict[str, float]]:
    """`edm_stochastic:20:s_churn=5,s_noise=1` -> ("edm_stochastic", 20, {"s_churn": 5.0, "s_noise": 1.0})."""
    parts = spec.split(":")
    try:
        opts = dict(kv.split("=", 1) for kv in parts[2].split(",")) if len(parts) == 3 else {}
        name, steps, opts = parts[0], int(parts[1]), {k: float(v) for k, v in opts.items()}
        get_sampler(name)
    except (IndexError, ValueError) as e:
        raise SystemExit(f"bad --sampler {spec!r}: NAME:STEPS[:OPT=VALUE,...] ({e})") from None
    if len(parts) > 3:
        raise SystemExit(f"bad --sampler {spec!r}: NAME:STEPS[:OPT=VALUE,...]")
    return name, steps, opts


def _key(row: dict) -> tuple:
    return (
        row["label"],
        row["guidance"],
        row["scale"],
        row["guide"],
        row["fid"]["num_fake"],
        sampler_text(row["fid"]),
        *guidance_variant(row),
    )


def _mean_of_checkpoints(run: Path, steps: list[int], weights: str) -> dict[str, torch.Tensor]:
    """The mean, in float64, of the U-Net weights (`weights`: "ema" or "model") checkpointed at `steps`."""
    root = checkpoint_root(run, "unet")
    saved = dict(list_checkpoints(root))
    total: dict[str, torch.Tensor] = {}
    for step in steps:
        if step not in saved:
            raise SystemExit(f"--average: no U-Net checkpoint at step {step} in {root}: {sorted(saved)}")
        for key, value in load_file(saved[step] / "model" / f"{weights}.safetensors").items():
            total[key] = total.get(key, 0) + value.double()
    return {key: value / len(steps) for key, value in total.items()}


def _data_of(run: Path) -> tuple[str, int, int]:
    data = yaml.safe_load((run / "config.yaml").read_text())["diffusion_stage"]["data"]
    return data["dataset"], data["resolution"], data["channels"]


def _parse(setting: str, guides: dict[str, str]) -> tuple[str, float, str | None]:
    parts = setting.split(":")
    if parts[0] == "cfg" and len(parts) == 2:
        return "cfg", float(parts[1]), None
    if parts[0] == "auto" and len(parts) == 3 and parts[2] in guides:
        return "auto", float(parts[1]), parts[2]
    raise SystemExit(f"bad setting {setting!r}: cfg:W or auto:W:GUIDE with GUIDE one of {sorted(guides)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--label", required=True, help="what the run is, as the table names it")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guide", action="append", default=[], help="NAME=FOLDER of a guide backbone")
    parser.add_argument("--sampler", default=f"{SAMPLER}:{STEPS}", help="NAME:STEPS[:OPT=VALUE,...]")
    parser.add_argument(
        "--interval", help="LO,HI: guide only at noise levels LO < sigma <= HI (Kynkäänniemi et al. 2024)"
    )
    parser.add_argument("--weights", choices=("ema", "model"), default="ema", help="the run's U-Net weights")
    parser.add_argument("--average", help="STEP,STEP,…: the mean of the U-Net's checkpoints at those steps")
    parser.add_argument("settings", nargs="+")
    args = parser.parse_args()
    sampler, steps, sampler_opts = _sampler(args.sampler)
    setup()
    guides = dict(g.split("=", 1) for g in args.guide)
    settings = [_parse(s, guides) for s in args.settings]
    dataset, resolution, channels = _data_of(args.run)
    pipe = LatentDiffusionPipeline.from_pretrained(args.run, weights=args.weights)
    averaged = [int(v) for v in args.average.split(",")] if args.average else None
    if averaged:
        pipe.backbone.load_state_dict(_mean_of_checkpoints(args.run, averaged, args.weights))
    pipe.progress = False
    if args.interval:
        pipe.guidance_interval = check_guidance_interval(args.interval.split(","), "--interval")
    train = load_dataset(dataset, "train", resolution, channels)
    test = load_dataset(dataset, "test", resolution, channels)
    extractor = InceptionFeatures()
    floor = fid_floor(train, test, args.n, extractor, progress=False)
    commit = git_commit()
    old = read_result("guidance") or {"rows": []}
    rows = old["rows"]
    loaded = {}  # each named guide read once: (model, its training steps)
    for name in {guide for _, _, guide in settings if guide}:
        folder = Path(guides[name])
        model = load_backbone(folder, weights="ema").to(pipe.device).eval().requires_grad_(False)
        # a checkpoint's model folder (…/step_00000500/model) or a run's backbone folder (…/unet)
        snapshot = folder.parent.name
        loaded[name] = (
            model,
            int(snapshot[5:]) if snapshot.startswith("step_") else trained_step(folder.parent, folder.name),
        )
    for kind, scale, guide in settings:
        pipe.guide, guide_steps = loaded[guide] if guide else (None, None)
        start = time.perf_counter()
        fid = evaluate_generation(
            pipe, test, args.n, steps, sampler, scale, args.n, args.seed, extractor=extractor,
            progress=False, reconstruction=False, guidance=kind, sampler_opts=sampler_opts,
        )  # fmt: skip
        fid["floor_real_vs_real"] = floor
        row = {
            "label": args.label,
            "run": str(args.run),
            "model_steps": latest_step(args.run, "unet"),
            **({"weights": args.weights} if args.weights != "ema" else {}),
            **({"averaged_steps": averaged} if averaged else {}),
            "guidance": kind,
            "scale": scale,
            "guide": guide,
            "guide_folder": guides.get(guide) if guide else None,
            "guide_params_m": sum(p.numel() for p in pipe.guide.parameters()) / 1e6 if guide else None,
            "guide_steps": guide_steps,
            **({"guidance_interval": list(pipe.guidance_interval)} if pipe.guidance_interval else {}),
            "fid": fid,
            "seconds": time.perf_counter() - start,
            "commit": commit,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        key = _key(row)
        rows = [r for r in rows if _key(r) != key]
        rows.append(row)
        write_result("guidance", {"benchmark": "guidance", "rows": rows, "machine": machine()})
        print(
            f"{args.label} {kind} {scale:g} {guide or ''} {args.interval or ''} {sampler_text(fid)}: "
            f"FID {fid['fid']:.2f} "
            f"(N = {args.n}, floor {floor:.2f})"
        )
    regenerate_docs()


if __name__ == "__main__":
    main()
