"""One folder, one budget: `latentdiff train --minutes M` against the same budget spent with the stage
commands' defaults, on a flat folder of the emoji train images (64×64 RGB, no class sub-folders).

    python benchmarks/train_budget.py                  # 20 minutes each; writes results/train_budget.json

Both runs see the same folder, whose held-out split (10 % by a hash of the path) is the same for both; both
are evaluated by the same code (`run_report.evaluate_run`: held-out PSNR/SSIM of Stage 1, FID of N samples
against N held-out images, the real-vs-real floor at that N). Defaults: `train-autoencoder --resolution 64
--kind kl --f 4 --minutes 0.4·M` then `train-diffusion --minutes 0.6·M` (the 8/12 split of the issue).
Wall time is measured from the command's start to its end, evaluation included for `train`. The stage
commands run as the README shows them (Stage 2 with `--data FOLDER --resolution 64`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import RUNS, machine, regenerate_docs, setup, write_result  # noqa: E402

from latentdiff.data.png_export import export_dataset  # noqa: E402
from latentdiff.run_report import evaluate_run  # noqa: E402
from latentdiff.training.trainer_state import checkpoint_root, latest_checkpoint  # noqa: E402

HERE = Path(__file__).parent


def flat_emoji_folder(dest: Path) -> Path:
    """The emoji train split as 64×64 PNGs in one folder (the per-name sub-folders flattened away)."""
    if dest.is_dir() and any(dest.iterdir()):
        return dest
    tmp = dest.with_name(dest.name + ".export")
    shutil.rmtree(tmp, ignore_errors=True)
    export_dataset("emoji", tmp, "train", resolution=64, channels=3)
    dest.mkdir(parents=True, exist_ok=True)
    for path in sorted(tmp.rglob("*.png")):
        path.rename(dest / f"{path.parent.name}_{path.name}")
    shutil.rmtree(tmp)
    return dest


def run(cmd: list[str], log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as out:
        subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=True)
    return (time.perf_counter() - start) / 60


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--only", choices=("train", "defaults"), help="run one side only")
    args = parser.parse_args()
    setup()
    root = RUNS / "train_budget"
    folder = flat_emoji_folder(root / "emoji_flat")
    exe = [sys.executable, "-m", "latentdiff"]
    result = {
        "benchmark": "train_budget",
        "minutes": args.minutes,
        "folder": "emoji train split, 64 px, flat",
        "num_images": sum(1 for _ in folder.glob("*.png")),
        "machine": machine(),
        "runs": {},
    }
    prev = HERE / "results" / "train_budget.json"
    if args.only and prev.is_file():
        result["runs"] = json.loads(prev.read_text()).get("runs", {})
    m = args.minutes
    if args.only in (None, "train"):
        out = root / "train"
        wall = run(
            [*exe, "train", "--data", str(folder), "--out", str(out), "--minutes", str(m), "--overwrite"],
            root / "train.log",
        )
        metrics = json.loads((out / "metrics.json").read_text())
        plan = (out / "plan.yaml").read_text()
        shutil.copy(out / "samples.png", HERE / "results" / "train_budget_train_samples.png")
        result["runs"]["train"] = {
            "command": f"latentdiff train --data DIR --out RUN --minutes {m:g}",
            "wall_minutes": wall,
            **metrics,
            "plan": plan,
        }
    if args.only in (None, "defaults"):
        out = root / "defaults"
        s1, s2 = 0.4 * m, 0.6 * m
        start = time.perf_counter()
        run(
            [
                *exe,
                "train-autoencoder",
                "--data",
                str(folder),
                "--resolution",
                "64",
                "--kind",
                "kl",
                "--f",
                "4",
                "--out",
                str(out),
                "--minutes",
                f"{s1:g}",
                "--overwrite",
            ],
            root / "defaults_stage1.log",
        )
        t1 = (time.perf_counter() - start) / 60
        run(
            [
                *exe,
                "train-diffusion",
                "--out",
                str(out),
                "--data",
                str(folder),
                "--resolution",
                "64",
                "--minutes",
                f"{s2:g}",
                "--overwrite",
            ],
            root / "defaults_stage2.log",
        )
        train_wall = (time.perf_counter() - start) / 60
        ev = time.perf_counter()
        metrics = evaluate_run(out, str(folder), 64, 3, seed=0, device="cpu", progress=False)
        metrics["steps"] = {
            "autoencoder": int(latest_checkpoint(checkpoint_root(out, "autoencoder")).name.split("_")[1]),
            "diffusion": int(latest_checkpoint(checkpoint_root(out, "unet")).name.split("_")[1]),
        }
        shutil.copy(out / "samples.png", HERE / "results" / "train_budget_defaults_samples.png")
        result["runs"]["defaults"] = {
            "command": f"train-autoencoder … --minutes {s1:g}; train-diffusion … --minutes {s2:g}",
            "wall_minutes": train_wall + (time.perf_counter() - ev) / 60,
            "minutes": {
                "stage1": t1,
                "stage2": train_wall - t1,
                "evaluation": (time.perf_counter() - ev) / 60,
            },
            **metrics,
        }
    result["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    write_result("train_budget", result)
    regenerate_docs()
    for name, r in result["runs"].items():
        print(
            f"{name}: wall {r['wall_minutes']:.1f} min, PSNR {r['reconstruction']['psnr']:.2f} dB, "
            f"FID {r['fid']['fid']:.1f} (N={r['fid']['num_fake']}, "
            f"floor {r['fid']['floor_real_vs_real']:.1f})"
        )


if __name__ == "__main__":
    main()
