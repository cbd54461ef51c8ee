"""What Stage 1 costs the samples, and what buys it back at equal time: Fashion-MNIST KL autoencoders trained
for a wall-clock budget, scored by rFID (their reconstructions of N test images against those images, the
standard Inception protocol) — a floor under the FID of any LDM built on them.

    python benchmarks/stage1_variants.py --minutes 2.6 base recon=l1 latent=8 disc_start=600
    python benchmarks/stage1_variants.py --minutes 5.2 base

A variant is `base` (the `tiny` preset as `latentdiff train` trains it: L2 + KL, AdamW at the preset's
learning rate — 4e-3 for `tiny` since session 12, 2e-3 in session 11, 1e-3 before, so earlier rows name
their rate — with a cosine schedule fitted to the minutes, bf16) or `key=value` changes of it:
`preset=small`, `recon=l1`, `latent=8` (latent channels), `disc_start=STEP` (PatchGAN term from that step,
`disc_weight=W`, default 0.5),
`lr=X`, `batch=B`, `ema=DECAY`. Rows merge into benchmarks/results/stage1_variants.json keyed by (variant,
minutes, N), with the steps each trained (a slower machine trains fewer in the same minutes), and
docs/benchmarks.md is regenerated.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import RUNS, git_commit, machine, read_result, regenerate_docs, setup, write_result  # noqa: E402

from latentdiff.autoencoder.model import Autoencoder  # noqa: E402
from latentdiff.data.load import load_dataset  # noqa: E402
from latentdiff.evaluation import reconstruction_fid  # noqa: E402
from latentdiff.metrics.inception import InceptionFeatures  # noqa: E402
from latentdiff.training import presets  # noqa: E402
from latentdiff.training.run import train_autoencoder  # noqa: E402
from latentdiff.training.stages import DataConfig  # noqa: E402
from latentdiff.training.trainer_state import latest_step  # noqa: E402


def stage_of(variant: str, minutes: float):
    """The Stage 1 configuration of a variant (`base` or space-free `key=value,key=value`)."""
    changes = {} if variant == "base" else dict(kv.split("=", 1) for kv in variant.split(","))
    data = DataConfig(dataset="fashion-mnist", resolution=32, channels=1)
    stage = presets.autoencoder_stage(data, changes.pop("preset", "tiny"), 1, minutes=minutes)
    model, loss, train = stage.model, stage.loss, stage.train
    if "latent" in changes:
        model = dataclasses.replace(model, latent_channels=int(changes.pop("latent")))
    if "recon" in changes:
        loss = dataclasses.replace(loss, recon_kind=changes.pop("recon"))
    if "disc_start" in changes:
        weight = float(changes.pop("disc_weight", 0.5))
        loss = dataclasses.replace(loss, disc_start=int(changes.pop("disc_start")), disc_weight=weight)
    if "lr" in changes:
        train = dataclasses.replace(train, lr=float(changes.pop("lr")))
    if "batch" in changes:
        train = dataclasses.replace(train, batch_size=int(changes.pop("batch")))
    if "ema" in changes:
        train = dataclasses.replace(train, ema_decay=float(changes.pop("ema")))
    if changes:
        raise SystemExit(f"variant {variant!r}: unknown keys {sorted(changes)}")
    return dataclasses.replace(stage, model=model, loss=loss, train=train)


def measure(variant: str, minutes: float, n: int, extractor: InceptionFeatures) -> dict:
    run = RUNS / "stage1_variants" / f"{variant.replace(',', '_').replace('=', '-')}_{minutes:g}min"
    start = time.perf_counter()
    stage = stage_of(variant, minutes)
    train_autoencoder(stage, run, overwrite=True, progress=False)
    trained = (time.perf_counter() - start) / 60
    ae = Autoencoder.from_pretrained(run / "autoencoder")
    test = load_dataset("fashion-mnist", "test", 32, 1)
    rfid = reconstruction_fid(ae, test, n, extractor, progress=False)
    return {
        "variant": variant,
        "minutes": minutes,
        "trained_minutes": trained,
        "steps": latest_step(run, "autoencoder"),
        "batch": stage.train.batch_size,
        "params_m": sum(p.numel() for p in ae.parameters()) / 1e6,
        "latent_shape": [ae.config.latent_channels, 8, 8],
        "rfid": rfid["fid"],
        "num_images": n,
        "commit": git_commit(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("variants", nargs="+", help="`base` or key=value[,key=value]")
    parser.add_argument("--minutes", type=float, default=2.6)
    parser.add_argument("--n", type=int, default=2000, help="test images reconstructed and scored")
    args = parser.parse_args()
    setup()
    extractor = InceptionFeatures()
    old = read_result("stage1_variants") or {"rows": []}
    rows = old["rows"]
    for variant in args.variants:
        row = measure(variant, args.minutes, args.n, extractor)
        key = (row["variant"], row["minutes"], row["num_images"])
        rows = [r for r in rows if (r["variant"], r["minutes"], r["num_images"]) != key] + [row]
        print(f"{variant}, {args.minutes:g} min: {row['steps']} steps, rFID {row['rfid']:.2f} (N = {args.n})")
        write_result("stage1_variants", {"benchmark": "stage1_variants", "rows": rows, "machine": machine()})
    regenerate_docs()


if __name__ == "__main__":
    main()
