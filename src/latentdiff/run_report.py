"""After `latentdiff train` has trained a run: evaluate it on the held-out split (`evaluate_run`: PSNR/SSIM
of Stage 1, sample grids, how_it_works.png, FID with its real-vs-real floor at the same N) and write its
`report.md` (`write_train_report`). Works on any trained run folder, however it was trained."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from latentdiff.data import load_dataset
from latentdiff.diffusion.samplers import sampler_description
from latentdiff.evaluation import evaluate_autoencoder, evaluate_generation, fid_floor, how_it_works_figure
from latentdiff.figures import class_grid
from latentdiff.pipeline import LatentDiffusionPipeline
from latentdiff.training.planner import (
    EVAL_SAMPLER,
    EVAL_SAMPLER_OPTS,
    EVAL_STEPS,
    GUIDE_PRESET,
    SAMPLES_FOR_EVAL,
    Plan,
)


def fid_sample_count(train, test) -> int:
    """N of `evaluate_run`'s FID: generated images, held-out references and train images for the floor."""
    return min(SAMPLES_FOR_EVAL, len(test), len(train))


def spread_captions(captions: list[list[str]], n: int, where: str) -> list[tuple[str, str]]:
    """The first captions of `n` images spread evenly over a split (distinct, in order), tagged `where`."""
    firsts = list(dict.fromkeys(c[0] for c in captions if c))
    picked = [firsts[i] for i in sorted({round(i * (len(firsts) - 1) / max(1, n - 1)) for i in range(n)})]
    return [(p, where) for p in picked[:n]]


def evaluate_run(
    run_dir: Path,
    data: str,
    resolution: int,
    channels: int,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    fid: bool = True,
) -> dict[str, Any]:
    """Held-out PSNR/SSIM, samples.png, how_it_works.png and (unless `fid` is False) FID with its
    real-vs-real floor at the same N, for a trained run folder (however it was trained)."""
    from latentdiff.metrics.inception import InceptionFeatures

    pipe = LatentDiffusionPipeline.from_pretrained(run_dir, device=device)
    train = load_dataset(data, "train", resolution, channels)
    test = load_dataset(data, "test", resolution, channels)
    recon = evaluate_autoencoder(pipe.autoencoder, test, limit=1000, progress=progress)
    # with a guide: autoguidance (it beat classifier-free guidance at the same w, benchmarks/guidance.py)
    kind = "auto" if pipe.guide is not None else "cfg"
    guidance = 2.0 if pipe.num_classes or pipe.takes_text or pipe.guide is not None else 1.0
    named = f"{'autoguidance' if kind == 'auto' else 'guidance'} {guidance}"
    sampling = {"steps": EVAL_STEPS, "sampler": EVAL_SAMPLER, **EVAL_SAMPLER_OPTS}
    solver = sampler_description(EVAL_SAMPLER, EVAL_STEPS, EVAL_SAMPLER_OPTS)
    if pipe.takes_text and test.captions:
        prompts = [
            *spread_captions(train.captions, 8, "seen"),
            *spread_captions(test.captions, 8, "held-out"),
        ]
        images = pipe(
            num_images=6 * len(prompts),
            **sampling,
            guidance_scale=guidance,
            prompt=[p for p, _ in prompts for _ in range(6)],
            seed=seed,
            output_type="pt",
        )
        how = f"{solver}, guidance {guidance}"
        title = f"prompts: seen = captions of train images, held-out = of held-out images; {how}"
        labels = [f"{p} ({where})" for p, where in prompts]
        class_grid(images, labels, run_dir / "prompts.png", cols=6, title=title)
        seen = sum(where == "seen" for _, where in prompts)
        title = f"samples for captions of train images: {how}"
        class_grid(images[: 6 * seen], labels[:seen], run_dir / "samples.png", cols=6, title=title)
    elif pipe.num_classes:
        names = pipe.class_names or [str(i) for i in range(pipe.num_classes)]
        shown = names[:20]  # one row per class, the first 20 classes
        labels = [c for c in range(len(shown)) for _ in range(8)]
        images = pipe(
            num_images=len(labels),
            **sampling,
            guidance_scale=guidance,
            class_labels=labels,
            seed=seed,
            output_type="pt",
            guidance=kind,
        )
        class_grid(images, shown, run_dir / "samples.png", cols=8, title=f"samples: {solver}, {named}")
    else:
        images = pipe(
            num_images=64,
            **sampling,
            seed=seed,
            output_type="pt",
            guidance_scale=guidance,
            guidance=kind,
        )
        title = f"samples: {solver}" + (f", {named}" if guidance != 1.0 else "")
        class_grid(images, [""] * 8, run_dir / "samples.png", cols=8, title=title)
    how_it_works_figure(pipe, test, run_dir / "how_it_works.png", recon["psnr"], seed)
    model = {
        "autoencoder_params": _params(pipe.autoencoder),
        "backbone_params": _params(pipe.backbone),
        "latent_shape": list(pipe.latent_shape),
    }
    held_out = getattr(test, "split_rule", None) or f"{data} test split"
    if not fid:
        return {"reconstruction": recon, "fid": None, "model": model, "held_out": held_out}
    n = fid_sample_count(train, test)
    extractor = InceptionFeatures()
    scores = evaluate_generation(
        pipe,
        test,
        n,
        EVAL_STEPS,
        EVAL_SAMPLER,
        guidance,
        n,
        seed,
        extractor=extractor,
        progress=progress,
        reconstruction=False,
        sampler_opts=EVAL_SAMPLER_OPTS,
        guidance=kind,
    )
    scores["floor_real_vs_real"] = fid_floor(train, test, n, extractor, progress)
    scores["floor_protocol"] = f"{n} train images against {n} held-out images"
    return {"reconstruction": recon, "fid": scores, "model": model, "held_out": held_out}


def _params(module: torch.nn.Module) -> str:
    return f"{sum(p.numel() for p in module.parameters()) / 1e6:.2f} M"


def _fid_line(fid: dict[str, Any] | None, why_not: str | None) -> str:
    if fid is None:
        return f"- Samples: FID not measured: {why_not}."
    return (
        f"- Samples: FID **{fid['fid']:.1f}** (N = {fid['num_fake']} generated vs {fid['num_real']} "
        f"held-out, {fid['sampler']} {fid['steps']} steps, {fid.get('guidance', 'guidance')} "
        f"{fid['guidance_scale']}); the "
        f"real-vs-real floor at that N ({fid['floor_protocol']}) is **{fid['floor_real_vs_real']:.1f}**, so "
        f"the model is at {fid['fid'] / fid['floor_real_vs_real']:.2f}× the floor. "
        f"KID {fid['kid_mean']:.4f}" + (f" ± {fid['kid_std']:.4f}." if fid["kid_std"] > 1e-9 else ".")
    )


def write_train_report(run_dir: Path, plan: Plan, ae_stage, dm_stage, metrics: dict[str, Any]) -> Path:
    recon, fid, t, steps = metrics["reconstruction"], metrics["fid"], metrics["minutes"], metrics["steps"]
    c, h, w = metrics["model"]["latent_shape"]
    ae_params, backbone_params = metrics["model"]["autoencoder_params"], metrics["model"]["backbone_params"]
    sessions = f" (over {t['sessions']} sessions: --resume)" if t.get("sessions", 1) > 1 else ""
    lines = [
        f"# latentdiff train: {plan.data}",
        "",
        "## What was chosen, and why",
        "",
        "```",
        plan.describe(),
        "```",
        "",
        "## What was trained",
        "",
        "| stage | model | steps | minutes |",
        "|---|---|---|---|",
        f"| Stage 1 | KL autoencoder `{plan.autoencoder}`, f = {plan.f}, {ae_params} params "
        f"| {steps['autoencoder']} × {ae_stage.train.batch_size} | {t['stage1']:.1f} (statistics included) |",
        f"| Stage 2 | U-Net `{plan.backbone}` on {c}×{h}×{w} latents, {backbone_params} parameters | "
        f"{steps['diffusion']} × {dm_stage.train.batch_size} | {t['stage2']:.1f} (encoding included) |",
        *(
            [
                f"| its autoguidance guide | the U-Net's own EMA at step {steps['guide']} (a snapshot) | "
                f"{steps['guide']} × {dm_stage.train.batch_size} | (in Stage 2) |"
                if plan.guide_snapshot
                else f"| its autoguidance guide | U-Net `{GUIDE_PRESET}` on the same latents | "
                f"{steps['guide']} × {dm_stage.train.batch_size} | {t.get('guide', 0.0):.1f} |"
            ]
            if "guide" in steps
            else []
        ),
        f"| planning (data, speed probe) | | | {t['planning']:.1f} |",
        f"| evaluation | | | {t['evaluation']:.1f} |",
        f"| **total**{sessions} | | | **{t['total']:.1f}** |",
        "",
        "## How good it is",
        "",
        f"Held-out images: {metrics['held_out']}.",
        "",
        f"- Reconstruction (Stage 1 alone, {recon['num_images']} held-out images): "
        f"PSNR **{recon['psnr']:.2f} dB**, "
        f"SSIM {recon['ssim']:.3f}; compression d/k = {recon['compression_ratio']:.0f}.",
        _fid_line(fid, metrics.get("fid_not_measured")),
        "",
        "![prompts](prompts.png)" if (run_dir / "prompts.png").is_file() else "![samples](samples.png)",
        "",
        "![how it works](how_it_works.png)",
        "",
        f"torch {torch.__version__}, device {plan.device}.",
    ]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
