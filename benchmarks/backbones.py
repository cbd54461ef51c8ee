"""The new options of the core, measured: backbone (U-Net, DiT) × preconditioning (VP-ε, EDM) on the
Fashion-MNIST f = 4 latents, the same wall-clock training budget per model.

    python benchmarks/backbones.py                       # 10 minutes of training per model
    python benchmarks/backbones.py --minutes 2 --samples 500 --models unet_vp_eps

`--models` re-runs some of the models and keeps the others' results when the protocol is the same.

Stage 1 is the demo's KL autoencoder (f = 4, 4×8×8 latents of 32×32 images), trained once into
benchmarks/runs/backbones/ (its minutes are reported, not counted in the budget) and shared by every model
through one latent cache. Stage 2 models, all class-conditional with 10 % label dropout, bf16 autocast,
the demo's recipe (batch 128, cosine schedule fitted to the budget, EMA 0.999):

- `unet_vp_eps`: the demo's U-Net with today's objective (ε-prediction, uniform t, min-SNR-5 weights);
- `unet_edm`: the same U-Net with EDM (Karras et al. 2022: preconditioning with σ_data = 1, log-normal σ,
  EDM weights);
- `dit_edm`: a DiT of a similar parameter count (patch 2 on the 8×8 latent, hidden 192, depth 6, 3 heads)
  with EDM, lr 5e-4.

Per model: training images/s (excluding the one-off latent encoding), sampling ms per image (DPM-Solver++
2M, 20 steps, guidance 1.5, batch 64, fp32, decoding included), and FID/KID of N generated images (balanced
classes) against N test images, with the real-vs-real floor (N train vs N test) at the same N. Writes
benchmarks/results/backbones.json, a sample grid per model, and regenerates docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, RUNS, machine, read_result, regenerate_docs, setup, write_result  # noqa: E402

from latentdiff import demo  # noqa: E402
from latentdiff.config import to_dict  # noqa: E402
from latentdiff.data.load import load_dataset  # noqa: E402
from latentdiff.evaluation import evaluate_generation, reference_features_for  # noqa: E402
from latentdiff.io.images import save_grid  # noqa: E402
from latentdiff.metrics.fid_kid import fid_kid_from_features  # noqa: E402
from latentdiff.metrics.inception import InceptionFeatures  # noqa: E402
from latentdiff.nets.dit import DiTConfig  # noqa: E402
from latentdiff.pipeline import LatentDiffusionPipeline  # noqa: E402
from latentdiff.training.run import train_autoencoder, train_diffusion  # noqa: E402
from latentdiff.training.stages import DiffusionStage  # noqa: E402
from latentdiff.training.trainer_state import checkpoint_root, latest_checkpoint, read_checkpoint  # noqa: E402

MODELS = ("unet_vp_eps", "unet_edm", "dit_edm")
SAMPLER, STEPS, GUIDANCE = "dpmpp_2m", 20, 1.5
AE_DIR = RUNS / "backbones"


def model_stage(name: str, minutes: float, seed: int) -> DiffusionStage:
    """The demo's Stage 2 with the budget, backbone and objective of model `name`."""
    base = demo.diffusion_stage("full")
    train = dataclasses.replace(
        base.train, max_minutes=minutes, steps=1_000_000, seed=seed, checkpoint_every=0
    )
    diffusion = base.diffusion
    if name.endswith("_edm"):
        diffusion = dataclasses.replace(
            diffusion, prediction="edm", noise_sampling="log_normal", loss_weighting="edm"
        )
    stage = dataclasses.replace(base, train=train, diffusion=diffusion)
    if name.startswith("dit"):
        dit = DiTConfig(patch_size=2, hidden_size=192, depth=6, num_heads=3)
        stage = dataclasses.replace(
            stage,
            backbone="dit",
            unet=DiffusionStage().unet,
            dit=dit,
            train=dataclasses.replace(train, lr=5e-4),
        )
    return stage


def prepare_autoencoder(minutes: float) -> dict:
    """The demo's autoencoder, trained once (reused while its configuration is unchanged)."""
    stage = demo.autoencoder_stage("full")
    stage = dataclasses.replace(stage, train=dataclasses.replace(stage.train, max_minutes=minutes))
    marker = AE_DIR / "autoencoder.done.json"
    config = to_dict(stage)
    if marker.is_file() and json.loads(marker.read_text())["config"] == config:
        return json.loads(marker.read_text())
    shutil.rmtree(AE_DIR, ignore_errors=True)
    start = time.perf_counter()
    train_autoencoder(stage, AE_DIR)
    record = {"config": config, "minutes": (time.perf_counter() - start) / 60}
    AE_DIR.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(record, indent=2))
    return record


def run_model(name: str, args, extractor: InceptionFeatures, test) -> dict:
    run_dir = RUNS / f"backbones_{name}"
    shutil.rmtree(run_dir, ignore_errors=True)
    stage = model_stage(name, args.minutes, args.seed)
    latents = AE_DIR / "latents"
    if not (latents / "cache.json").is_file():  # encode once, into the shared cache
        latents = None
    train_diffusion(stage, run_dir, autoencoder=AE_DIR / "autoencoder", latents=latents)
    if latents is None:
        shutil.copytree(run_dir / "latents", AE_DIR / "latents")
    state, _ = read_checkpoint(latest_checkpoint(checkpoint_root(run_dir, stage.backbone)))
    minutes = [h["minutes"] for h in state["history"] if "minutes" in h][-1]
    pipe = LatentDiffusionPipeline.from_pretrained(run_dir)
    pipe.progress = False
    labels = [i // 8 for i in range(80)]
    pipe(num_images=8, steps=STEPS, sampler=SAMPLER, guidance_scale=GUIDANCE, class_labels=labels[:8], seed=1)
    start = time.perf_counter()
    grid = pipe(
        num_images=64,
        steps=STEPS,
        sampler=SAMPLER,
        guidance_scale=GUIDANCE,
        class_labels=labels[:64],
        seed=2,
        output_type="pt",
        batch_size=64,
    )
    ms_per_image = (time.perf_counter() - start) / 64 * 1000
    grid = pipe(
        num_images=80, steps=STEPS, sampler=SAMPLER, guidance_scale=GUIDANCE, class_labels=labels, seed=3,
        output_type="pt",
    )
    save_grid(RESULTS / f"backbones_{name}.png", grid, nrow=8, upscale=4)
    fid = evaluate_generation(
        pipe, test, args.samples, STEPS, SAMPLER, GUIDANCE, args.samples, args.seed, extractor=extractor,
        reconstruction=False,
    )
    record = {
        "backbone": stage.backbone,
        "parameters": sum(p.numel() for p in pipe.backbone.parameters()),
        "prediction": stage.diffusion.prediction,
        "noise_sampling": stage.diffusion.noise_sampling,
        "loss_weighting": stage.diffusion.loss_weighting,
        "lr": stage.train.lr,
        "train_minutes": minutes,
        "train_steps": state["step"],
        "train_images_per_s": state["step"] * stage.train.batch_size / (minutes * 60),
        "sample_ms_per_image": ms_per_image,
        "fid": fid["fid"],
        "kid_mean": fid["kid_mean"],
        "fid_num_samples": fid["num_fake"],
        "fid_num_reference": fid["num_real"],
        "samples": f"backbones_{name}.png",
        "config": to_dict(stage),
    }
    print(
        f"{name}: {state['step']} steps in {minutes:.1f} min ({record['train_images_per_s']:.0f} img/s), "
        f"{ms_per_image:.1f} ms/image, FID {fid['fid']:.2f} (N={fid['num_fake']})",
        flush=True,
    )
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget per diffusion model")
    ap.add_argument("--ae-minutes", type=float, default=3.0, help="training budget of the autoencoder")
    ap.add_argument("--samples", type=int, default=2000, help="N of the FID (generated and reference)")
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    setup()
    extractor = InceptionFeatures()
    ae = prepare_autoencoder(args.ae_minutes)
    test = load_dataset("fashion-mnist", "test", 32, 1)
    train = load_dataset("fashion-mnist", "train", 32, 1)
    fid_protocol = f"{extractor.protocol}/{extractor.protocol_hash}"
    floor = fid_kid_from_features(
        reference_features_for(train, args.samples, extractor),
        reference_features_for(test, args.samples, extractor),
        fid_protocol,
        kid_subset_size=min(1000, args.samples),
    )
    protocol = {
        "budget_minutes": args.minutes,
        "autoencoder": "the demo's KL f4 (4x8x8 latents of 32x32 Fashion-MNIST)",
        "autoencoder_minutes": ae["minutes"],
        "sampler": SAMPLER,
        "steps": STEPS,
        "guidance": GUIDANCE,
        "fid_num_samples": args.samples,
        "fid_reference": f"fashion-mnist test ({args.samples} images, 32 px)",
        "fid_protocol": fid_protocol,
        "train_precision": "bf16 autocast",
        "sample_precision": "fp32",
        "seed": args.seed,
    }
    # a run of some of the models keeps the others' results when the protocol is the same
    previous = read_result("backbones") or {}
    same = {k: v for k, v in previous.get("protocol", {}).items() if k != "autoencoder_minutes"} == {
        k: v for k, v in protocol.items() if k != "autoencoder_minutes"
    }
    kept = previous.get("models", {}) if same else {}
    models = {name: run_model(name, args, extractor, test) for name in args.models}
    models = {name: models.get(name) or kept[name] for name in MODELS if name in models or name in kept}
    result = {"benchmark": "backbones", "machine": machine(), "protocol": protocol, "fid_floor": floor["fid"]}
    write_result("backbones", {**result, "models": models})
    regenerate_docs()


if __name__ == "__main__":
    main()
