"""The main job (`latentdiff demo`, `make demo`): a class-conditional latent diffusion model on
Fashion-MNIST, end to end, with figures and a report.

Stage 1 trains a KL autoencoder (f = 4, 4 latent channels: 32×32 images become 4×8×8 latents, d/k = 4),
Stage 2 a class-conditional U-Net on its latents with label dropout, then the run folder receives
`samples.png` (one row per class, DPM-Solver++ 20 steps with classifier-free guidance),
`how_it_works.png` (the data flow on real test images) and `report.md`. Finished stages are reused by the
next run (each leaves a `<stage>.done.json` that records its configuration and wall time).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from latentdiff.config import to_dict
from latentdiff.data.load import load_dataset
from latentdiff.diffusion.config import DiffusionConfig
from latentdiff.evaluation import evaluate_autoencoder, evaluate_generation, how_it_works_figure
from latentdiff.figures import class_grid
from latentdiff.io.checkpoint import read_json, write_json
from latentdiff.pipeline import LatentDiffusionPipeline
from latentdiff.training import presets
from latentdiff.training.run import train_autoencoder, train_diffusion
from latentdiff.training.stages import AutoencoderStage, DataConfig, DiffusionStage
from latentdiff.training.trainer_state import checkpoint_root, latest_checkpoint, read_checkpoint

log = logging.getLogger(__name__)


PRESETS = ("full", "quick", "tiny")
# per preset: training images, Stage 1 steps, Stage 2 steps, minutes per stage, test images measured, FID
# samples. The full preset is sized for 2 CPU cores and 15 minutes in all: both stages train for a fixed
# time (their cosine schedules fitted to it), so a faster machine trains more steps in the same time.
_BUDGET = {
    "full": (30_000, 100_000, 100_000, (3.0, 8.0), None, 500),
    "quick": (6000, 100_000, 100_000, (0.6, 1.0), 2000, 0),
    "tiny": (512, 10, 10, (0.5, 0.5), 256, 0),
}


def _data(preset: str) -> DataConfig:
    return DataConfig(dataset="fashion-mnist", resolution=32, eval_images=256, limit=_BUDGET[preset][0])


def autoencoder_stage(preset: str = "full") -> AutoencoderStage:
    """The `small` Stage 1 preset on Fashion-MNIST (32 px grey, f = 4) with the demo's budget."""
    limit, steps, _, minutes, _, _ = _BUDGET[preset]
    stage = presets.autoencoder_stage(_data(preset), "small", 1, f=4, steps=steps)
    # a fixed time (schedule fitted to it) with `steps` as the cap; statistics over at most the images used
    train = dataclasses.replace(stage.train, max_minutes=minutes[0], fit_to_time=True)
    return dataclasses.replace(stage, train=train, stats_images=min(10_000, limit or 10_000))


def diffusion_stage(preset: str = "full") -> DiffusionStage:
    """The `small` Stage 2 preset on the 4×8×8 latents with the demo's budget and its VP-ε objective with
    min-SNR weights (the recipe its reported results were measured with)."""
    _, _, steps, minutes, _, _ = _BUDGET[preset]
    stage = presets.diffusion_stage(_data(preset), "small", 8, conditional=True, steps=steps)
    train = dataclasses.replace(stage.train, max_minutes=minutes[1], fit_to_time=True)
    vp_eps = DiffusionConfig(schedule="linear", prediction="eps", loss_weighting="min_snr")
    return dataclasses.replace(stage, train=train, diffusion=vp_eps)


@dataclass
class DemoResult:
    run_dir: Path
    samples: Path
    how_it_works: Path
    report: Path
    metrics: dict[str, Any] = field(default_factory=dict)


def _config_hash(stage: Any) -> str:
    return hashlib.sha256(json.dumps(to_dict(stage), sort_keys=True).encode()).hexdigest()[:16]


def _run_stage(run_dir: Path, name: str, stage: Any, train, stale: bool = False) -> dict[str, Any]:
    """Train a stage unless a finished one with the same configuration is there; returns its record.

    `train(overwrite)` continues an interrupted stage (`overwrite=False`: resume) or starts it again from
    scratch when its configuration changed or `stale` (its inputs were retrained) — the demo's own run
    folder, so replacing what it trained before is what the user asked for by changing it."""
    marker = run_dir / f"{name}.done.json"
    overwrite = False
    if marker.is_file():
        record = read_json(marker)
        if record.get("config_hash") == _config_hash(stage) and not stale:
            log.info("%s: reusing the finished stage in %s", name, run_dir)
            return {**record, "reused": True}
        log.info("%s: configuration or input changed since the last run: training again", name)
        overwrite = True
        marker.unlink()
    start = time.perf_counter()
    train(overwrite)
    # the trainer of the autoencoder stage is "autoencoder", of the diffusion stage "unet"
    state, _ = read_checkpoint(
        latest_checkpoint(checkpoint_root(run_dir, "unet" if name == "diffusion" else name))
    )
    record = {
        "config_hash": _config_hash(stage),
        "minutes": (time.perf_counter() - start) / 60,
        "steps": state["step"],
    }
    write_json(record, marker)
    return {**record, "reused": False}


def run_demo(out: str | Path = "runs/demo", preset: str = "full", seed: int = 0) -> DemoResult:
    """Train both stages (or reuse them), then write samples.png, how_it_works.png and report.md.
    `preset` "quick" is a ~2-minute version, "tiny" a smoke test of a few seconds of training."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    run_dir = Path(out)
    t0 = time.perf_counter()
    ae_stage, dm_stage = autoencoder_stage(preset), diffusion_stage(preset)
    ae_stage = dataclasses.replace(ae_stage, train=dataclasses.replace(ae_stage.train, seed=seed))
    dm_stage = dataclasses.replace(dm_stage, train=dataclasses.replace(dm_stage.train, seed=seed))
    stage1 = _run_stage(
        run_dir,
        "autoencoder",
        ae_stage,
        lambda fresh: train_autoencoder(ae_stage, run_dir, resume=not fresh, overwrite=fresh),
    )
    stage2 = _run_stage(
        run_dir,
        "diffusion",
        dm_stage,
        lambda fresh: train_diffusion(dm_stage, run_dir, resume=not fresh, overwrite=fresh),
        stale=not stage1["reused"],
    )

    eval_start = time.perf_counter()
    pipe = LatentDiffusionPipeline.from_pretrained(run_dir)
    test = load_dataset("fashion-mnist", "test", 32, 1)
    recon = evaluate_autoencoder(pipe.autoencoder, test, limit=_BUDGET[preset][4])
    fid_samples = _BUDGET[preset][5]

    per_class = 8
    names = pipe.class_names or [str(i) for i in range(pipe.num_classes)]
    labels = [c for c in range(len(names)) for _ in range(per_class)]
    start = time.perf_counter()
    images = pipe(
        num_images=len(labels),
        steps=20,
        sampler="dpmpp_2m",
        guidance_scale=2.0,
        class_labels=labels,
        seed=seed,
        output_type="pt",
    )
    sample_seconds = time.perf_counter() - start
    samples = class_grid(
        images,
        names,
        run_dir / "samples.png",
        cols=per_class,
        title="Fashion-MNIST samples: DPM-Solver++ 20 steps, guidance 2.0",
    )

    figure = how_it_works_figure(pipe, test, run_dir / "how_it_works.png", recon["psnr"], seed)
    metrics = {
        "reconstruction": recon,
        "stage1_minutes": stage1["minutes"],
        "stage2_minutes": stage2["minutes"],
        "sampling_seconds_per_image": sample_seconds / len(labels),
    }
    if fid_samples:
        metrics["fid"] = evaluate_generation(
            pipe, test, fid_samples, 20, "dpmpp_2m", 2.0, fid_samples, seed, reconstruction=False
        )
    metrics["eval_minutes"] = (time.perf_counter() - eval_start) / 60
    metrics["total_minutes"] = (time.perf_counter() - t0) / 60
    write_json(metrics, run_dir / "metrics.json")
    report = write_report(run_dir, pipe, ae_stage, dm_stage, stage1, stage2, metrics, preset)
    return DemoResult(run_dir, samples, figure, report, metrics)


def _params(module: torch.nn.Module) -> str:
    n = sum(p.numel() for p in module.parameters())
    return f"{n / 1e6:.2f} M"


def write_report(
    run_dir: Path,
    pipe: LatentDiffusionPipeline,
    ae_stage: AutoencoderStage,
    dm_stage: DiffusionStage,
    stage1: dict,
    stage2: dict,
    metrics: dict,
    preset: str,
) -> Path:
    recon = metrics["reconstruction"]
    c, h, w = pipe.latent_shape
    ae, unet = pipe.autoencoder, pipe.backbone
    reused = lambda rec: " (reused from an earlier run)" if rec["reused"] else ""  # noqa: E731
    fid = metrics.get("fid")
    lines = [
        f"# latentdiff demo{f' ({preset} preset)' if preset != 'full' else ''}: class-conditional LDM on "
        "Fashion-MNIST",
        "",
        "![samples](samples.png)",
        "",
        "![how it works](how_it_works.png)",
        "",
        "## What was trained",
        "",
        "| | |",
        "|---|---|",
        f"| data | Fashion-MNIST train ({ae_stage.data.limit or 60000} of 60,000 images) resized to 32×32 "
        "grey; test split for measurements |",
        f"| Stage 1 | KL autoencoder, f = {ae.downsample_factor}, {ae.latent_channels} latent channels, "
        f"{_params(ae)} parameters, {stage1['steps']} steps × {ae_stage.train.batch_size} images |",
        f"| compression | d = {1 * 32 * 32} pixels → k = {c}×{h}×{w} = {c * h * w} latent numbers "
        f"(d/k = {recon['compression_ratio']:.0f}) |",
        f"| latent scale | scale_factor {ae.config.scale_factor:.4f}, shift {ae.config.shift_factor:.4f} "
        f"(over {ae.config.latent_stats_images} training images) |",
        f"| Stage 2 | class-conditional U-Net, {_params(unet)} parameters, {stage2['steps']} steps × "
        f"{dm_stage.train.batch_size} latents, {dm_stage.diffusion.prediction}-prediction, "
        f"{dm_stage.diffusion.loss_weighting} weighting, label dropout {dm_stage.cond_dropout['class']} |",
        f"| sampling | DPM-Solver++(2M), 20 steps, guidance 2.0: "
        f"{metrics['sampling_seconds_per_image'] * 1000:.1f} ms per image incl. decoding |",
        "",
        "## Measurements",
        "",
        "| | |",
        "|---|---|",
        f"| reconstruction PSNR (test, {recon['num_images']} images) | {recon['psnr']:.2f} dB |",
        f"| reconstruction SSIM | {recon['ssim']:.4f} |",
    ]
    if fid:
        lines.append(
            f"| FID ({fid['num_fake']} class-balanced samples, guidance 2, vs {fid['num_real']} test images; "
            f"`{fid['protocol']}`; FID from so few samples is biased upwards, compare only at equal N) | "
            f"{fid['fid']:.2f} |"
        )
    lines += [
        "",
        "## Time (wall clock)",
        "",
        "| | minutes |",
        "|---|---|",
        f"| Stage 1 training + latent statistics{reused(stage1)} | {stage1['minutes']:.1f} |",
        f"| encoding + Stage 2 training{reused(stage2)} | {stage2['minutes']:.1f} |",
        f"| evaluation (PSNR/SSIM, samples, figures, FID) | {metrics['eval_minutes']:.1f} |",
        f"| **total this run** | **{metrics['total_minutes']:.1f}** |",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, device {pipe.device}.",
        "",
        "Reproduce: `make demo` (or `latentdiff demo --out runs/demo`). Sample more: "
        f"`latentdiff sample {run_dir} --class sneaker --guidance 2 --out out/sneakers`.",
        "",
    ]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
