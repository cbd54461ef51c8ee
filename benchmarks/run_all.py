"""`make bench`: every benchmark in order (each one command of its own), then docs/benchmarks.md.

    python benchmarks/run_all.py [--minutes 20]

Order matters: pixel_vs_latent reuses the autoencoders of autoencoder.py, samplers the model of
pixel_vs_latent. The full run takes several hours on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20.0, help="training budget per model")
    args = ap.parse_args()
    minutes = str(args.minutes)
    steps = [
        ["fid_floor.py"],
        ["unet_throughput.py"],
        ["autoencoder.py", "--minutes", minutes],
        ["pixel_vs_latent.py", "--minutes", minutes, "--ae-minutes", minutes],
        ["samplers.py"],
        ["backbones.py", "--minutes", str(max(args.minutes / 2, 10.0))],
        ["sizing.py"],
        ["train_budget.py", "--minutes", minutes],
        ["quality.py", "--recipe", "demo", "--minutes", "15"],
        ["quality.py", "--recipe", "demo", "--minutes", "60"],
    ]
    for script, *rest in steps:
        print(f"== {script}", flush=True)
        subprocess.run([sys.executable, str(HERE / script), *rest], check=True)
    subprocess.run([sys.executable, str(HERE / "report.py")], check=True)


if __name__ == "__main__":
    main()
