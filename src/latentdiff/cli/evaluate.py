"""`latentdiff eval`: FID/KID of a trained run and its autoencoder's rFID/PSNR/SSIM on the test split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction, formatter) -> None:
    p = sub.add_parser(
        "eval",
        help="FID/KID of generated images and the autoencoder's rFID/PSNR/SSIM, into RUN/metrics.json",
        description="FID/KID (standard Inception-v3 FID network, sample counts recorded) of generated images "
        "against the run's dataset split, plus rFID, PSNR and SSIM of the autoencoder on the same images.\n\n"
        "example:\n  latentdiff eval runs/demo --num-samples 2000 --steps 20 --sampler dpmpp_2m --guidance 2",
        formatter_class=formatter,
    )
    p.add_argument("run", type=Path, help="run folder")
    p.add_argument("--num-samples", type=int, default=1000, help="generated images")
    p.add_argument(
        "--num-reference", type=int, default=None, help="real images (default: as many as samples)"
    )
    p.add_argument("--split", default="test", help="split of the run's dataset used as reference")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--sampler", default="dpmpp_2m")
    p.add_argument("--guidance", type=float, default=1.0, help="guidance scale, finite and >= 0 (1 = off)")
    p.add_argument(
        "--autoguidance", action="store_true", help="guide with the run's guide/ model (as `sample`)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_eval)


def run_dataset(run: Path, split: str, channels: int | None = None):
    """The dataset a run's Stage 2 was trained on, at its resolution and channels (from config.yaml; where
    the channels were left to the data, `channels`: the autoencoder's)."""
    import yaml

    from latentdiff.data.load import load_dataset

    path = run / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: is {run} a run folder made by `latentdiff train-diffusion`?"
        )
    data = (yaml.safe_load(path.read_text()) or {}).get("diffusion_stage", {}).get("data")
    if not data:
        raise ValueError(f"{path} has no diffusion_stage.data section")
    return load_dataset(data["dataset"], split, data.get("resolution"), data.get("channels") or channels)


def cmd_eval(args: argparse.Namespace) -> str:
    from latentdiff.diffusion.guidance import check_guidance_scale
    from latentdiff.evaluation import evaluate_autoencoder, evaluate_generation
    from latentdiff.io.checkpoint import write_json
    from latentdiff.pipeline import LatentDiffusionPipeline

    if args.num_samples < 2:
        raise ValueError(f"--num-samples must be at least 2 for FID, got {args.num_samples}")
    check_guidance_scale(args.guidance, "--guidance", negative=None)
    pipe = LatentDiffusionPipeline.from_pretrained(args.run, device=args.device)
    data = run_dataset(args.run, args.split, pipe.autoencoder.config.in_channels)
    generation = evaluate_generation(
        pipe, data, args.num_samples, args.steps, args.sampler, args.guidance, args.num_reference, args.seed,
        guidance="auto" if args.autoguidance else "cfg",
    )  # fmt: skip
    autoencoder = evaluate_autoencoder(pipe.autoencoder, data)
    path = args.run / "metrics.json"
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    metrics.update({"generation": generation, "autoencoder": autoencoder})
    write_json(metrics, path)
    g = generation
    return (
        f"FID {g['fid']:.2f} (KID {g['kid_mean']:.4f} ± {g['kid_std']:.4f}) from {g['num_fake']} samples vs "
        f"{g['num_real']} {args.split} images; rFID {g['rfid']:.2f}; autoencoder PSNR "
        f"{autoencoder['psnr']:.2f} dB, SSIM {autoencoder['ssim']:.4f} "
        f"on {autoencoder['num_images']} images\n"
        f"written to {path}"
    )
