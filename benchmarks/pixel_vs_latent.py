"""The latent-diffusion claim, measured: the same U-Net and the same wall-clock training budget in pixel
space (the `identity` autoencoder, f = 1) and in the latent space of a trained autoencoder (f = 4; on emoji
also f = 8).

    python benchmarks/pixel_vs_latent.py                 # 20 minutes of training per model
    python benchmarks/pixel_vs_latent.py --minutes 4 --only fashion-mnist

Per model: training images/s, sampling seconds per image including decoding (DPM-Solver++ 20 steps),
FID against training time (at 1/4, 1/2 and all of the budget, `--curve-samples` samples) and FID at the
end of the budget (`--final-samples` samples). Unconditional models; FID reference: the Fashion-MNIST test
split, the emoji train split (its test split has only 373 images). The autoencoders come from
benchmarks/autoencoder.py (trained there if missing; their training time is reported, not counted in
the diffusion budget). Writes benchmarks/results/pixel_vs_latent.json, a FID-vs-time plot per dataset,
sample grids, and regenerates docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import autoencoder as ae_bench  # noqa: E402
from common import RESULTS, RUNS, machine, read_result, regenerate_docs, setup, write_result  # noqa: E402

from latentdiff.autoencoder.config import AutoencoderConfig  # noqa: E402
from latentdiff.config import to_dict  # noqa: E402
from latentdiff.data.load import load_dataset  # noqa: E402
from latentdiff.diffusion.config import DiffusionConfig  # noqa: E402
from latentdiff.evaluation import evaluate_generation  # noqa: E402
from latentdiff.figures import line_plot  # noqa: E402
from latentdiff.io.images import save_grid  # noqa: E402
from latentdiff.metrics.inception import InceptionFeatures  # noqa: E402
from latentdiff.nets.unet import UNetConfig  # noqa: E402
from latentdiff.pipeline import LatentDiffusionPipeline  # noqa: E402
from latentdiff.training.config import TrainConfig  # noqa: E402
from latentdiff.training.run import train_autoencoder, train_diffusion  # noqa: E402
from latentdiff.training.stages import AutoencoderStage, DataConfig, DiffusionStage  # noqa: E402
from latentdiff.training.trainer_state import checkpoint_root, latest_checkpoint, read_checkpoint  # noqa: E402

DATASETS = {
    "fashion-mnist": {
        "resolution": 32,
        "flip": False,
        "reference_split": "test",
        "final_samples": 1000,
        "models": {"pixel": None, "latent_f4": "fashion_kl_f4"},
    },
    "emoji": {
        "resolution": 64,
        "flip": True,
        "reference_split": "train",
        "final_samples": 500,
        "models": {"pixel": None, "latent_f4": "emoji_kl_f4", "latent_f8": "emoji_kl_f8"},
    },
}
CURVE_FRACTIONS = (0.25, 0.5, 1.0)
SAMPLER, STEPS = "dpmpp_2m", 20


def data_config(dataset: str) -> DataConfig:
    spec = DATASETS[dataset]
    return DataConfig(dataset=dataset, resolution=spec["resolution"], flip=spec["flip"])


def diffusion_stage(dataset: str, minutes: float, seed: int) -> DiffusionStage:
    """One U-Net for every model (only its in/out channels follow the data): the same size everywhere."""
    return DiffusionStage(
        data=data_config(dataset),
        unet=UNetConfig(
            base_channels=64,
            channel_mult=(1, 2, 2),
            num_res_blocks=2,
            attention_levels=(2,),
            head_channels=64,
            groups=32,
        ),
        diffusion=DiffusionConfig(schedule="linear", prediction="eps", loss_weighting="min_snr"),
        train=TrainConfig(
            steps=10_000_000,
            batch_size=64,
            lr=4e-4,
            warmup_steps=200,
            lr_schedule="constant",
            ema_decay=0.999,
            precision="bf16",
            checkpoint_every=0,
            sample_every=0,
            max_minutes=minutes,
            seed=seed,
        ),
        conditional="no",
    )


def prepare_autoencoder(dataset: str, model: str, ae_name: str | None, run_dir: Path, minutes: float) -> dict:
    """Put Stage 1 into run_dir/autoencoder: identity for pixel space, else a benchmarked autoencoder."""
    if ae_name is None:
        stage = AutoencoderStage(data=data_config(dataset), model=AutoencoderConfig(kind="identity"))
        train_autoencoder(stage, run_dir, progress=False)
        return {"autoencoder": "identity (pixel space)", "autoencoder_train_minutes": 0.0}
    entry = ae_bench.measure(ae_name, minutes, retrain=False)
    return {
        "autoencoder": ae_name,
        "autoencoder_train_minutes": entry["train_minutes"],
        "autoencoder_psnr": entry["psnr"],
        "autoencoder_source": str(RUNS / ae_name / "autoencoder"),
    }


def run_model(dataset: str, model: str, ae_name: str | None, args, extractor: InceptionFeatures) -> dict:
    run_dir = RUNS / f"pvl_{dataset}_{model}"
    # each segment resumes the run, so a run left by another budget would be continued, not restarted
    shutil.rmtree(run_dir, ignore_errors=True)
    record = {"model": model, **prepare_autoencoder(dataset, model, ae_name, run_dir, args.ae_minutes)}
    reference = load_dataset(dataset, DATASETS[dataset]["reference_split"], DATASETS[dataset]["resolution"])
    curve, images_seen, segments = [], 0, []
    done = 0.0
    for fraction in CURVE_FRACTIONS:
        target = fraction * args.minutes
        stage = diffusion_stage(dataset, max(target - done, 0.0), args.seed)
        if target - done > 0.01:  # a segment that overshot by one step leaves nothing for the next
            start = time.perf_counter()
            train_diffusion(stage, run_dir, autoencoder=record.get("autoencoder_source"), resume=True)
            wall = (time.perf_counter() - start) / 60
            state, _ = read_checkpoint(latest_checkpoint(checkpoint_root(run_dir, "unet")))
            seg_minutes = [h["minutes"] for h in state["history"] if "minutes" in h]
            segments.append(seg_minutes[-1] if seg_minutes else wall)
            done = sum(segments)
        images_seen = state["step"] * stage.train.batch_size
        pipe = LatentDiffusionPipeline.from_pretrained(run_dir)
        pipe.progress = False
        n = (
            (args.final_samples or DATASETS[dataset]["final_samples"])
            if fraction == 1.0
            else args.curve_samples
        )
        fid = evaluate_generation(
            pipe,
            reference,
            n,
            STEPS,
            SAMPLER,
            1.0,
            n,
            args.seed,
            extractor=extractor,
            reconstruction=fraction == 1.0,
        )
        curve.append({"train_minutes": done, "steps": state["step"], "fid": fid["fid"], "num_samples": n})
        print(
            f"{dataset} {model}: {done:.1f} min, step {state['step']}, FID {fid['fid']:.2f} (N={n})",
            flush=True,
        )
    # sampling speed, decoding included, on a warm pipeline
    pipe(num_images=8, steps=STEPS, sampler=SAMPLER, seed=1, output_type="pt")
    start = time.perf_counter()
    grid = pipe(num_images=64, steps=STEPS, sampler=SAMPLER, seed=2, output_type="pt", batch_size=64)
    sample_seconds = (time.perf_counter() - start) / 64
    save_grid(
        RESULTS / f"pixel_vs_latent_{dataset}_{model}.png",
        grid,
        nrow=8,
        upscale=max(1, 128 // grid.shape[-1]),
    )
    unet_params = sum(p.numel() for p in pipe.backbone.parameters())
    c, h, w = pipe.latent_shape
    record.update(
        {
            "latent_shape": [c, h, w],
            "unet_parameters": unet_params,
            "train_minutes": done,
            "train_steps": curve[-1]["steps"],
            "train_images": images_seen,
            "train_images_per_s": images_seen / (done * 60),
            "sample_seconds_per_image": sample_seconds,
            "fid": fid["fid"],
            "kid_mean": fid["kid_mean"],
            "rfid": fid.get("rfid"),
            "fid_num_samples": fid["num_fake"],
            "fid_num_reference": fid["num_real"],
            "fid_reference": fid["reference"],
            "fid_protocol": fid["protocol"],
            "fid_curve": curve,
            "samples": f"pixel_vs_latent_{dataset}_{model}.png",
            "diffusion_config": to_dict(diffusion_stage(dataset, args.minutes, args.seed)),
        }
    )
    return record


def summarize(dataset: str, models: dict, minutes: float) -> dict:
    pixel = models["pixel"]
    out = {"budget_minutes": minutes, "models": models}
    for name, m in models.items():
        if name == "pixel":
            continue
        suffix = "" if name == "latent_f4" else f"_{name.split('_')[1]}"
        out[f"train_speedup{suffix}"] = m["train_images_per_s"] / pixel["train_images_per_s"]
        out[f"sample_speedup{suffix}"] = pixel["sample_seconds_per_image"] / m["sample_seconds_per_image"]
        out[f"fid_latent{suffix}"] = m["fid"]
    out["fid_pixel"] = pixel["fid"]
    out["fid_num_samples"] = pixel["fid_num_samples"]
    out["fid_reference"] = pixel["fid_reference"]
    line_plot(
        RESULTS / f"pixel_vs_latent_{dataset}.png",
        {
            name: ([p["train_minutes"] for p in m["fid_curve"]], [p["fid"] for p in m["fid_curve"]])
            for name, m in models.items()
        },
        xlabel="training minutes (2 CPU cores)",
        ylabel="FID (lower is better)",
        logy=True,
        title=f"{dataset}: same U-Net, same time budget",
        annotate_last=True,
    )
    out["plot"] = f"pixel_vs_latent_{dataset}.png"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20.0, help="training budget per diffusion model")
    ap.add_argument("--ae-minutes", type=float, default=20.0, help="budget of an autoencoder trained here")
    ap.add_argument("--only", nargs="*", default=list(DATASETS))
    ap.add_argument("--curve-samples", type=int, default=250, help="samples per FID point of the curve")
    ap.add_argument(
        "--final-samples",
        type=int,
        default=None,
        help="samples of the final FID (default: 1000 for fashion-mnist, 500 for emoji)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--models",
        nargs="*",
        default=None,
        help="a subset of the models (pixel, latent_f4, latent_f8); default: all of the dataset's",
    )
    args = ap.parse_args()
    setup()
    extractor = InceptionFeatures()
    previous = read_result("pixel_vs_latent") or {}
    datasets = previous.get("datasets", {})
    for d in datasets.values():  # results written before the protocol was kept per dataset
        d.setdefault("protocol", previous.get("protocol", {}))
    for dataset in args.only:
        wanted = args.models or list(DATASETS[dataset]["models"])
        # a run of some of the models keeps the others' results (same protocol required)
        kept = datasets.get(dataset, {})
        if args.models and kept.get("protocol", {}).get("budget_minutes") == args.minutes:
            models = {n: m for n, m in kept.get("models", {}).items() if n not in wanted}
        else:
            models = {}
        if "pixel" not in models and "pixel" not in wanted:
            raise SystemExit(
                f"{dataset}: no pixel-space result with a {args.minutes}-minute budget to compare with"
            )
        for name, ae in DATASETS[dataset]["models"].items():
            if name in wanted:
                models[name] = run_model(dataset, name, ae, args, extractor)
        models = {n: models[n] for n in DATASETS[dataset]["models"] if n in models}
        datasets[dataset] = summarize(dataset, models, args.minutes)
        datasets[dataset]["protocol"] = {
            "budget_minutes": args.minutes,
            "sampler": SAMPLER,
            "steps": STEPS,
            "curve_fractions": CURVE_FRACTIONS,
            "curve_samples": args.curve_samples,
            "final_samples": args.final_samples or DATASETS[dataset]["final_samples"],
            "seed": args.seed,
            "conditional": False,
            "train_precision": "bf16 autocast",
            "sample_precision": "fp32",
        }
        write_result(
            "pixel_vs_latent",
            {"benchmark": "pixel_vs_latent", "machine": machine(), "datasets": datasets},
        )
    regenerate_docs()


if __name__ == "__main__":
    main()
