"""Stage 1 quality: train each autoencoder for a fixed wall-clock budget, evaluate on the test split.

    python benchmarks/autoencoder.py                 # all configurations, 20 minutes each
    python benchmarks/autoencoder.py --minutes 5 --only fashion_kl_f4

Writes benchmarks/results/autoencoder.json (a list of entries: dataset, kind, f, latent_channels, psnr,
ssim, train_minutes, codebook_usage for vq, and the protocol) and a reconstruction figure per model, then
regenerates docs/benchmarks.md. The trained models stay in benchmarks/runs/<name>/ for the other
benchmarks (pixel_vs_latent reuses them). Targets (issue 3): Fashion-MNIST 32×32 kl f4 c4 PSNR ≥ 28 dB
and SSIM ≥ 0.93 (PCA with the same 256 numbers: 25.6 dB at 28×28); vq f4 K=512 PSNR ≥ 25 dB with ≥ 90 %
of codes used; emoji 64×64 kl f4 c4 PSNR ≥ 26 dB (PCA with 1,024 numbers: 23.4 dB).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RUNS, machine, read_result, regenerate_docs, setup, write_result  # noqa: E402

from latentdiff.autoencoder.config import AutoencoderConfig  # noqa: E402
from latentdiff.autoencoder.losses import AutoencoderLossConfig  # noqa: E402
from latentdiff.autoencoder.model import Autoencoder  # noqa: E402
from latentdiff.config import to_dict  # noqa: E402
from latentdiff.data.load import load_dataset  # noqa: E402
from latentdiff.evaluation import evaluate_autoencoder  # noqa: E402
from latentdiff.figures import reconstruction_figure  # noqa: E402
from latentdiff.training.config import TrainConfig  # noqa: E402
from latentdiff.training.run import train_autoencoder  # noqa: E402
from latentdiff.training.stages import AutoencoderStage, DataConfig  # noqa: E402
from latentdiff.training.trainer_state import checkpoint_root, latest_checkpoint, read_checkpoint  # noqa: E402

TARGETS = {
    "fashion_kl_f4": {"psnr": 28.0, "ssim": 0.93},
    "fashion_vq_f4": {"psnr": 25.0, "codebook_usage": 0.90},
    "emoji_kl_f4": {"psnr": 26.0},
    "emoji_kl_f8": {},  # no target: the f = 8 latent space of the pixel-vs-latent benchmark
}


PROTOCOL = (
    "train for a wall-clock budget on the train split (cosine schedule fitted to the budget), then "
    "PSNR/SSIM of posterior-mode reconstructions over the whole test split"
)


def stage(name: str, minutes: float) -> AutoencoderStage:
    """The configuration of each benchmarked autoencoder (chosen for a 2-core CPU and a fixed budget)."""
    train = TrainConfig(
        steps=1_000_000,
        batch_size=32,
        lr=1e-3,
        warmup_steps=100,
        lr_schedule="cosine",
        min_lr_ratio=0.02,
        ema_decay=0.998,
        checkpoint_every=2000,
        eval_every=0,
        sample_every=0,
        max_minutes=minutes,
        fit_to_time=True,
        precision="bf16",  # 1.8x faster convolutions on this CPU (AVX-512 bf16); evaluation stays fp32
    )
    loss = AutoencoderLossConfig(recon_kind="l2", disc_weight=0.0)
    if name == "fashion_kl_f4":
        data = DataConfig(dataset="fashion-mnist", resolution=32)
        model = AutoencoderConfig(
            kind="kl",
            base_channels=32,
            channel_mult=(1, 2, 4),
            num_res_blocks=1,
            latent_channels=4,
            mid_attention=False,
            groups=16,
            kl_weight=1e-6 * 1 * 32 * 32,  # 1e-6 per image element, as measured (LDM units, d = C·H·W)
        )
    elif name == "fashion_vq_f4":
        data = DataConfig(dataset="fashion-mnist", resolution=32)
        model = AutoencoderConfig(
            kind="vq",
            base_channels=32,
            channel_mult=(1, 2, 4),
            num_res_blocks=1,
            latent_channels=8,
            codebook_size=512,
            mid_attention=False,
            groups=16,
            ema_codebook=True,
            commitment_beta=0.25,
        )
    elif name in ("emoji_kl_f4", "emoji_kl_f8"):
        data = DataConfig(dataset="emoji", resolution=64, flip=True)
        model = AutoencoderConfig(
            kind="kl",
            base_channels=32,
            channel_mult=(1, 2, 4) if name.endswith("f4") else (1, 2, 4, 4),
            num_res_blocks=1,
            latent_channels=4,
            mid_attention=False,
            groups=16,
            kl_weight=1e-6 * 3 * 64 * 64,  # 1e-6 per image element, as measured (LDM units, d = C·H·W)
        )
    else:
        raise ValueError(f"unknown configuration {name!r}; known: {', '.join(TARGETS)}")
    return AutoencoderStage(data=data, model=model, loss=loss, train=train)


def measure(name: str, minutes: float, retrain: bool) -> dict:
    cfg = stage(name, minutes)
    run_dir = RUNS / name
    marker = run_dir / "benchmark.json"
    if marker.is_file() and not retrain:
        record = json.loads(marker.read_text())
        if record["config"] == to_dict(cfg):
            print(f"{name}: reusing the model trained in {run_dir}")
            stage_minutes = record["train_minutes"]
        else:
            retrain = True
    if retrain or not marker.is_file():
        start = time.perf_counter()
        train_autoencoder(cfg, run_dir, overwrite=True)
        stage_minutes = (time.perf_counter() - start) / 60
        marker.write_text(json.dumps({"config": to_dict(cfg), "train_minutes": stage_minutes}))
    ae = Autoencoder.from_pretrained(run_dir / "autoencoder")
    test = load_dataset(cfg.data.dataset, "test", cfg.data.resolution, ae.config.in_channels)
    metrics = evaluate_autoencoder(ae, test)
    images, _ = test.get_batch(range(8))
    with torch.no_grad():
        rec = ae.decode(ae.encode(images).mode())
    figure = reconstruction_figure(
        Path(__file__).parent / "results" / f"autoencoder_{name}.png",
        images,
        rec,
        title=f"{name}: test images | reconstructions | error",
    )
    state, _ = read_checkpoint(latest_checkpoint(checkpoint_root(run_dir, "autoencoder")))
    # the optimisation alone (the trainer's clock); the stage also loads data and measures latent statistics
    train_minutes = [h["minutes"] for h in state["history"] if "minutes" in h][-1]
    entry = {
        "name": name,
        "dataset": cfg.data.dataset,
        "resolution": cfg.data.resolution,
        "kind": ae.kind,
        "f": ae.downsample_factor,
        "latent_channels": ae.latent_channels,
        "psnr": metrics["psnr"],
        "ssim": metrics["ssim"],
        "train_minutes": train_minutes,
        "stage_minutes": stage_minutes,
        "test_images": metrics["num_images"],
        "compression_ratio": metrics["compression_ratio"],
        "parameters": sum(p.numel() for p in ae.parameters()),
        "figure": figure.name,
        "targets": TARGETS[name],
        "protocol": PROTOCOL,
        "machine": machine(),
        "config": to_dict(cfg),
    }
    entry["steps"] = state["step"]
    entry["images_seen"] = state["step"] * cfg.train.batch_size
    if ae.kind == "vq":
        entry["codebook_usage"] = metrics["codebook_usage"]
        entry["perplexity"] = metrics["perplexity"]
        entry["codebook_size"] = ae.config.codebook_size
    entry["targets_met"] = all(entry[k] >= v for k, v in TARGETS[name].items())
    return entry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20.0, help="training budget per model")
    ap.add_argument("--only", nargs="*", default=list(TARGETS), help="configurations to run")
    ap.add_argument("--retrain", action="store_true", help="train again even if a finished model exists")
    args = ap.parse_args()
    setup()
    results = {e["name"]: e for e in read_result("autoencoder") or []}
    for name in args.only:
        results[name] = measure(name, args.minutes, args.retrain)
        print(json.dumps({k: v for k, v in results[name].items() if k != "config"}, indent=1))
        write_result("autoencoder", [results[k] for k in TARGETS if k in results])
    regenerate_docs()


if __name__ == "__main__":
    main()
