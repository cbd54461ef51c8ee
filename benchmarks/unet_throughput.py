"""U-Net throughput on CPU: latentdiff's UNet against diffusers' UNet2DModel with the same architecture and
the same weights, measured in one run with interleaved rounds.

    python benchmarks/unet_throughput.py            # writes benchmarks/results/unet_throughput.json

Architecture: 4×16×16 latents, channels (64, 128, 256), 2 ResBlocks per level, self-attention at the
lowest resolution and in the middle block, scale-shift time conditioning, batch 64, 2 threads.

Measured (images/s, median over rounds, every round runs every variant, rotating their order):
- train step (forward + MSE loss + backward + AdamW step), fp32. Ours uses the fused CPU AdamW, diffusers
  the default `torch.optim.AdamW` (what its training examples construct); diffusers with the fused AdamW is
  reported as well, to separate the network's gain from the optimizer's;
- sampling forwards under `torch.inference_mode`, fp32, both;
- our bf16 inference: bf16 weights (input/output stay fp32) and `torch.autocast("cpu", bfloat16)`, with the
  largest absolute deviation of each from our fp32 output;
- a 2048³ fp32 (and bf16) GEMM in every round, as torch.mm and as a oneDNN 1×1 convolution, as the
  attainable peak under the same load.
FLOPs of one forward / train step come from `torch.utils.flop_counter.FlopCounterMode`.

The headline speedups are ratios of medians. On a shared machine a round that overlaps another job runs
several times slower (two OpenMP threads wait on each other at every operator), so the JSON also keeps
every round's rates, the per-round paired ratios and the best round of each variant.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from latentdiff.nets import UNet, UNetConfig
from latentdiff.nets.unet_diffusers_format import diffusers_config

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_model  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "unet_throughput.json"
TARGETS = {"train_speedup": 1.10, "sample_speedup_fp32": 1.05, "sample_speedup_bf16": 1.6}


def load_average() -> list[float]:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def build_models(batch: int, channels_last: bool = True) -> tuple[UNet, torch.nn.Module, UNetConfig]:
    from diffusers import UNet2DModel

    cfg = UNetConfig(
        in_channels=4,
        out_channels=4,
        sample_size=16,
        base_channels=64,
        channel_mult=(1, 2, 4),
        num_res_blocks=2,
        attention_levels=(2,),
        mid_attention=True,
        head_channels=64,
        groups=32,
        channels_last=channels_last,
    )
    torch.manual_seed(0)
    ours = UNet(cfg)
    dconf = {k: v for k, v in diffusers_config(cfg).items() if not k.startswith("_")}
    theirs = UNet2DModel(**dconf)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs, cfg


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7, help="measured rounds (after one warm-up round)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-iters", type=int, default=2, help="train steps per variant per round")
    parser.add_argument("--sample-iters", type=int, default=3, help="forwards per variant per round")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    load_before = load_average()
    import diffusers

    b = args.batch
    ours, theirs, cfg = build_models(b)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(b, 4, 16, 16, generator=gen)
    t = torch.rand(b, generator=gen) * 999
    target = torch.randn(b, 4, 16, 16, generator=gen)

    # --- equivalence and bf16 deviation (eval, fp32 reference = our output) --------------------------
    ours.eval()
    theirs.eval()
    ours_bf16 = copy.deepcopy(ours).to(torch.bfloat16).eval()
    with torch.inference_mode():
        ref = ours(x, t)
        fp32_diff = (ref - theirs(x, t).sample).abs().max().item()
        bf16_weights_diff = (ours_bf16(x, t) - ref).abs().max().item()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16_autocast_diff = (ours(x, t).float() - ref).abs().max().item()
        ref_absmax = ref.abs().max().item()

    # --- flops --------------------------------------------------------------------------------------
    with torch.inference_mode():
        fwd_flops = count_flops(lambda: ours(x, t))
        fwd_flops_diffusers = count_flops(lambda: theirs(x, t).sample)
    ours.train()
    train_flops = count_flops(lambda: F.mse_loss(ours(x, t), target).backward())
    theirs.train()
    train_flops_diffusers = count_flops(lambda: F.mse_loss(theirs(x, t).sample, target).backward())
    theirs.zero_grad(set_to_none=True)
    ours.zero_grad(set_to_none=True)

    # --- timed variants -----------------------------------------------------------------------------
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-4, fused=True)
    opt_theirs = torch.optim.AdamW(theirs.parameters(), lr=1e-4)
    theirs_fused = copy.deepcopy(theirs)
    opt_theirs_fused = torch.optim.AdamW(theirs_fused.parameters(), lr=1e-4, fused=True)

    def train_step(model, opt, diffusers_out: bool) -> None:
        model.train()
        out = model(x, t)
        out = out.sample if diffusers_out else out
        loss = F.mse_loss(out, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sample(model, diffusers_out: bool = False, autocast: bool = False) -> None:
        model.eval()
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(x, t)
            _ = out.sample if diffusers_out else out

    mm = {
        dt: (torch.randn(2048, 2048).to(dt), torch.randn(2048, 2048).to(dt))
        for dt in (torch.float32, torch.bfloat16)
    }

    def matmul(dtype) -> None:
        a, c = mm[dtype]
        for _ in range(5):
            torch.mm(a, c)

    # the same 2048³ GEMM through oneDNN (a 1×1 convolution over 2048 pixels), the library that runs the
    # convolutions: torch.mm goes to MKL, whose fp32 kernels on AMD CPUs stop at AVX2
    gemm = {
        dt: (
            torch.randn(1, 2048, 32, 64).to(dt).contiguous(memory_format=torch.channels_last),
            torch.randn(2048, 2048, 1, 1).to(dt),
        )
        for dt in (torch.float32, torch.bfloat16)
    }

    def onednn_gemm(dtype) -> None:
        a, c = gemm[dtype]
        with torch.inference_mode():
            for _ in range(5):
                F.conv2d(a, c)

    train_n, sample_n = args.train_iters, args.sample_iters
    variants = {
        # name: (callable running one unit, work units per call, unit)
        "train_ours": (lambda: [train_step(ours, opt_ours, False) for _ in range(train_n)], train_n * b),
        "train_diffusers": (
            lambda: [train_step(theirs, opt_theirs, True) for _ in range(train_n)],
            train_n * b,
        ),
        "train_diffusers_fused_adamw": (
            lambda: [train_step(theirs_fused, opt_theirs_fused, True) for _ in range(train_n)],
            train_n * b,
        ),
        "sample_ours_fp32": (lambda: [sample(ours) for _ in range(sample_n)], sample_n * b),
        "sample_diffusers_fp32": (lambda: [sample(theirs, True) for _ in range(sample_n)], sample_n * b),
        "sample_ours_bf16_weights": (lambda: [sample(ours_bf16) for _ in range(sample_n)], sample_n * b),
        "sample_ours_bf16_autocast": (
            lambda: [sample(ours, autocast=True) for _ in range(sample_n)],
            sample_n * b,
        ),
        "matmul_fp32": (lambda: matmul(torch.float32), 5 * 2 * 2048**3 / 1e9),
        "matmul_bf16": (lambda: matmul(torch.bfloat16), 5 * 2 * 2048**3 / 1e9),
        "matmul_onednn_fp32": (lambda: onednn_gemm(torch.float32), 5 * 2 * 2048**3 / 1e9),
        "matmul_onednn_bf16": (lambda: onednn_gemm(torch.bfloat16), 5 * 2 * 2048**3 / 1e9),
    }
    names = list(variants)
    rates: dict[str, list[float]] = {k: [] for k in names}
    for r in range(args.rounds + 1):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            fn, work = variants[name]
            start = time.perf_counter()
            fn()
            rate = work / (time.perf_counter() - start)
            if r > 0:  # round 0 is the warm-up
                rates[name].append(rate)
        print(f"round {r}/{args.rounds}: " + ", ".join(f"{k}={rates[k][-1]:.1f}" for k in names if rates[k]))

    med = {k: statistics.median(v) for k, v in rates.items()}
    best = {k: max(v) for k, v in rates.items()}
    peak_fp32 = max(med["matmul_fp32"], med["matmul_onednn_fp32"])
    peak_bf16 = max(med["matmul_bf16"], med["matmul_onednn_bf16"])

    def paired(ours_key: str, base_key: str) -> list[float]:
        """Per-round ratios: both sides measured back to back, so they saw about the same load."""
        return [o / d for o, d in zip(rates[ours_key], rates[base_key], strict=True)]

    bf16_mode = (
        "weights" if med["sample_ours_bf16_weights"] >= med["sample_ours_bf16_autocast"] else "autocast"
    )
    bf16_rate = med[f"sample_ours_bf16_{bf16_mode}"]
    bf16_diff = bf16_weights_diff if bf16_mode == "weights" else bf16_autocast_diff
    result = {
        "benchmark": "unet_throughput",
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "train_speedup": med["train_ours"] / med["train_diffusers"],
        "sample_speedup_fp32": med["sample_ours_fp32"] / med["sample_diffusers_fp32"],
        "sample_speedup_bf16": bf16_rate / med["sample_diffusers_fp32"],
        "targets": TARGETS,
        "train_speedup_vs_diffusers_with_fused_adamw": med["train_ours"] / med["train_diffusers_fused_adamw"],
        "images_per_s_median": {k: v for k, v in med.items() if not k.startswith("matmul")},
        "images_per_s_best_round": {k: v for k, v in best.items() if not k.startswith("matmul")},
        "speedups_per_round": {
            "train": paired("train_ours", "train_diffusers"),
            "sample_fp32": paired("sample_ours_fp32", "sample_diffusers_fp32"),
            "sample_bf16": paired(f"sample_ours_bf16_{bf16_mode}", "sample_diffusers_fp32"),
        },
        "speedups_best_round": {
            "train": best["train_ours"] / best["train_diffusers"],
            "sample_fp32": best["sample_ours_fp32"] / best["sample_diffusers_fp32"],
            "sample_bf16": best[f"sample_ours_bf16_{bf16_mode}"] / best["sample_diffusers_fp32"],
        },
        "images_per_s_rounds": {k: v for k, v in rates.items() if not k.startswith("matmul")},
        "bf16": {
            "chosen": bf16_mode,
            "max_abs_diff_vs_fp32": bf16_diff,
            "max_abs_diff_vs_fp32_weights": bf16_weights_diff,
            "max_abs_diff_vs_fp32_autocast": bf16_autocast_diff,
            "fp32_output_abs_max": ref_absmax,
        },
        "fp32_max_abs_diff_ours_vs_diffusers": fp32_diff,
        "flops": {
            "forward_gflop_per_image": fwd_flops / b / 1e9,
            "forward_gflop_per_image_diffusers": fwd_flops_diffusers / b / 1e9,
            "train_fwd_bwd_gflop_per_image": train_flops / b / 1e9,
            "train_fwd_bwd_gflop_per_image_diffusers": train_flops_diffusers / b / 1e9,
            "note": "FlopCounterMode counts convolutions and matmuls (attention's sdpa included where it "
            "has a formula); normalisation and elementwise work are not counted. Ours needs fewer FLOPs "
            "for the same function: its upsampling convolution runs as a 4-tap transposed convolution",
        },
        "matmul_peak_gflops": {
            "fp32": peak_fp32,
            "bf16": peak_bf16,
            "torch_mm_fp32": med["matmul_fp32"],
            "torch_mm_bf16": med["matmul_bf16"],
            "onednn_fp32": med["matmul_onednn_fp32"],
            "onednn_bf16": med["matmul_onednn_bf16"],
            "size": 2048,
            "note": "peak = the faster of torch.mm (MKL) and the same GEMM as a oneDNN 1x1 convolution",
        },
        "protocol": {
            "batch": b,
            "latent_shape": [4, 16, 16],
            "architecture": {
                "block_out_channels": list(cfg.level_channels),
                "layers_per_block": cfg.num_res_blocks,
                "attention": "lowest resolution + middle block, head_channels 64",
                "time_conditioning": "scale_shift",
            },
            "threads": args.threads,
            "rounds": args.rounds,
            "warmup_rounds": 1,
            "train_steps_per_round": train_n,
            "forwards_per_round": sample_n,
            "ours": "latentdiff UNet (channels-last, GroupNorm+SiLU as PyTorch operators on channels-last "
            "tensors with the time scale-shift folded into its affine map, upsampling as a 4-tap "
            "transposed convolution, attention projections as 1x1 convolutions), "
            "torch.optim.AdamW(fused=True); bf16 = weights cast to bf16 or autocast",
            "diffusers": "UNet2DModel defaults (contiguous NCHW), torch.optim.AdamW() defaults",
            "torch": torch.__version__,
            "diffusers_version": diffusers.__version__,
            "cpu": cpu_model(),
            "logical_cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_before": load_before,
            "load_average_after": load_average(),
        },
    }
    achieved = {
        "train_ours": med["train_ours"] * train_flops / b / 1e9,
        "train_diffusers": med["train_diffusers"] * train_flops_diffusers / b / 1e9,
        "sample_ours_fp32": med["sample_ours_fp32"] * fwd_flops / b / 1e9,
        "sample_diffusers_fp32": med["sample_diffusers_fp32"] * fwd_flops_diffusers / b / 1e9,
        f"sample_ours_bf16_{bf16_mode}": bf16_rate * fwd_flops / b / 1e9,
    }
    result["achieved_gflops"] = achieved
    result["achieved_fraction_of_matmul_peak"] = {
        k: v / (peak_bf16 if "bf16" in k else peak_fp32) for k, v in achieved.items()
    }
    result["targets_met"] = {k: result[k] >= v for k, v in TARGETS.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("train_speedup", "sample_speedup_fp32", "sample_speedup_bf16")}))
    print(f"bf16 ({bf16_mode}) max |diff| vs fp32: {bf16_diff:.4g} (fp32 output |max| {ref_absmax:.3g})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
