"""Stage 2 again on a trained run's frozen autoencoder and latents: one U-Net variant, a fixed number of steps
(machine-independent work), class-conditional, into a new run folder that `benchmarks/guidance.py` can score.

    python benchmarks/stage2_on_run.py runs/sixty /tmp/s60_small 3430 preset=small
    python benchmarks/guidance.py --run /tmp/s60_small --label "…" --n 2000 \\
        --guide tiny=runs/sixty/guide auto:2:tiny

Session 12's rows "60-min AE, … U-Net" in guidance.json were made this way (which U-Net for 60 minutes).
Keys: `preset=` (tiny … large, default small), `batch=`, `lr=`, `noise_mean=` / `noise_std=` (EDM's
log-normal σ), `guide=STEPS` (also train a `tiny` guide for that many steps), `every=K` / `keep=M` (a
checkpoint every K steps, the last M kept: earlier snapshots of the model to guide it with).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from common import setup  # noqa: E402

from latentdiff.pipeline import GUIDE_FOLDER  # noqa: E402
from latentdiff.training import presets  # noqa: E402
from latentdiff.training.run import train_diffusion  # noqa: E402
from latentdiff.training.stages import DataConfig  # noqa: E402


def main() -> None:
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    src, out, steps = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    keys = dict(a.split("=", 1) for a in sys.argv[4:])
    setup()
    data = DataConfig(**yaml.safe_load((src / "config.yaml").read_text())["diffusion_stage"]["data"])
    side = json.loads((src / "latents" / "cache.json").read_text())["latent_shape"][-1]
    stage = presets.diffusion_stage(data, keys.get("preset", "small"), side, True, steps=steps)
    diffusion, train = stage.diffusion, stage.train
    if "noise_mean" in keys:
        diffusion = dataclasses.replace(
            diffusion, noise_mean=float(keys["noise_mean"]), noise_std=float(keys.get("noise_std", 1.2))
        )
    if "batch" in keys:
        train = dataclasses.replace(train, batch_size=int(keys["batch"]))
    if "lr" in keys:
        train = dataclasses.replace(train, lr=float(keys["lr"]))
    train = dataclasses.replace(
        train, checkpoint_every=int(keys.get("every", 100_000)), keep_last=int(keys.get("keep", 2))
    )
    stage = dataclasses.replace(stage, diffusion=diffusion, train=train)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "autoencoder").exists():
        shutil.copytree(src / "autoencoder", out / "autoencoder")
        shutil.copytree(src / "latents", out / "latents")
    start = time.perf_counter()
    train_diffusion(stage, out, progress=False, overwrite=True)
    print(f"stage2 {out.name}: {steps} steps in {(time.perf_counter() - start) / 60:.2f} min", flush=True)
    if "guide" in keys:
        guide = presets.diffusion_stage(data, "tiny", side, True, steps=int(keys["guide"]))
        guide = dataclasses.replace(
            guide, diffusion=diffusion, train=dataclasses.replace(guide.train, checkpoint_every=100_000)
        )
        start = time.perf_counter()
        train_diffusion(guide, out, progress=False, folder=GUIDE_FOLDER)
        print(f"guide {out.name}: {keys['guide']} steps in {(time.perf_counter() - start) / 60:.2f} min")


if __name__ == "__main__":
    main()
