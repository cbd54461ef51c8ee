"""U-Net throughput on a GPU: latentdiff's UNet against diffusers' UNet2DModel, same architecture and weights
as `unet_throughput.py` (4×16×16 latents, channels 64/128/256), measured in one run with interleaved rounds.

    python benchmarks/unet_throughput_cuda.py            # writes benchmarks/results/unet_throughput_cuda.json

Per precision — fp32 (TF32 off), TF32 (matmuls and cuDNN convolutions), bf16 autocast — and per model:
- train step (forward + MSE loss + backward + fused AdamW, the same optimizer for both), images/s;
- sampling forward under `torch.inference_mode`, images/s;
- the largest batch that fits (doubling until the allocator refuses), train step and sampling, bf16;
- each output's largest deviation from our fp32 output (the oracle check at the tolerance of its precision).
Timing: CUDA-synchronised wall clock around `--iters` calls after a warm-up, median over rounds. It also runs
on the CPU (`--device cpu`, TF32 rows skipped) so the script itself is tested without a GPU.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from unet_throughput import build_models  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "unet_throughput_cuda.json"
# largest |ours - reference| / max|reference| each precision must stay within (the reference: our own fp32
# output with TF32 off); fp32 differences are summation order only, TF32 keeps a 10-bit mantissa, bf16 7 bits
TOLERANCE = {"fp32": 1e-4, "tf32": 1e-2, "bf16": 5e-2}


def set_tf32(on: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def precisions(device: torch.device) -> list[str]:
    return ["fp32", "tf32", "bf16"] if device.type == "cuda" else ["fp32", "bf16"]


def largest_batch(step: Callable[[int], None], device: torch.device, start: int, cap: int) -> int:
    """The largest power-of-two multiple of `start` (≤ cap) for which `step(batch)` runs; 0 if none."""
    best, batch = 0, start
    while batch <= cap:
        try:
            step(batch)
            sync(device)
            best = batch
        except torch.OutOfMemoryError:
            break
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        batch *= 2
    return best


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=10, help="timed calls per variant per round")
    parser.add_argument("--max-batch", type=int, default=32768, help="cap of the largest-batch search")
    parser.add_argument(
        "--channels-last",
        choices=("on", "off"),
        default="on",
        help="our U-Net's memory layout inside (diffusers' stays NCHW)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available on this machine")
    import diffusers

    b = args.batch
    ours, theirs, cfg = build_models(b, channels_last=args.channels_last == "on")
    ours, theirs = ours.to(device), theirs.to(device)
    gen = torch.Generator().manual_seed(1)  # inputs drawn on the CPU: the same numbers on every device
    x = torch.randn(b, 4, 16, 16, generator=gen).to(device)
    t = (torch.rand(b, generator=gen) * 999).to(device)
    target = torch.randn(b, 4, 16, 16, generator=gen).to(device)

    def forward(model, inputs=(x, t), precision: str = "fp32"):
        set_tf32(precision == "tf32")
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(*inputs)
        return (out.sample if hasattr(out, "sample") else out).float()

    # --- oracle check: both models against our fp32 output ----------------------------------------------
    ours.eval()
    theirs.eval()
    deviation = {}
    with torch.inference_mode():
        ref = forward(ours)
        scale = ref.abs().max().item()
        for p in precisions(device):
            for name, model in (("ours", ours), ("diffusers", theirs)):
                if name == "ours" and p == "fp32":
                    continue
                d = (forward(model, precision=p) - ref).abs().max().item() / scale
                deviation[f"{name}_{p}"] = {"max_rel": d, "tolerance": TOLERANCE[p], "ok": d <= TOLERANCE[p]}

    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        ours(x, t)
    fwd_flops = fc.get_total_flops()

    # --- timed variants ---------------------------------------------------------------------------------
    opts = {
        "ours": torch.optim.AdamW(ours.parameters(), lr=1e-4, fused=True),
        "diffusers": torch.optim.AdamW(theirs.parameters(), lr=1e-4, fused=True),
    }
    models = {"ours": ours, "diffusers": theirs}

    def train_step(name: str, precision: str, inputs=(x, t), tgt=target) -> None:
        model = models[name]
        model.train()
        loss = F.mse_loss(forward(model, inputs, precision), tgt)
        opts[name].zero_grad(set_to_none=True)
        loss.backward()
        opts[name].step()

    def sample(name: str, precision: str, inputs=(x, t)) -> None:
        models[name].eval()
        with torch.inference_mode():
            forward(models[name], inputs, precision)

    variants: dict[str, Callable[[], None]] = {}
    for p in precisions(device):
        for name in models:
            variants[f"train_{name}_{p}"] = lambda n=name, p=p: train_step(n, p)
            variants[f"sample_{name}_{p}"] = lambda n=name, p=p: sample(n, p)
    for fn in variants.values():  # warm-up: cuDNN autotuning, allocator, lazy inits
        fn()
    sync(device)
    rates: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            sync(device)
            t0 = time.perf_counter()
            for _ in range(args.iters):
                variants[name]()
            sync(device)
            rates[name].append(args.iters * b / (time.perf_counter() - t0))
    median = {k: statistics.median(v) for k, v in rates.items()}
    speedup = {}
    for p in precisions(device):
        for kind in ("train", "sample"):
            speedup[f"{kind}_{p}"] = median[f"{kind}_ours_{p}"] / median[f"{kind}_diffusers_{p}"]

    # --- the largest batch each fits (bf16) --------------------------------------------------------------
    def inputs_of(n: int):
        xs = torch.randn(n, 4, 16, 16, device=device)
        return (xs, torch.rand(n, device=device) * 999), xs

    largest = {}
    for name in models if args.max_batch >= b else []:
        largest[f"train_{name}_bf16"] = largest_batch(
            lambda n, m=name: train_step(m, "bf16", *inputs_of(n)), device, b, args.max_batch
        )
        largest[f"sample_{name}_bf16"] = largest_batch(
            lambda n, m=name: sample(m, "bf16", inputs_of(n)[0]), device, b, args.max_batch
        )
    set_tf32(False)

    result = {
        "benchmark": "unet_throughput_cuda",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "batch": b,
        "rounds": args.rounds,
        "iters": args.iters,
        "forward_gflops_per_image": fwd_flops / b / 1e9,
        "images_per_s": median,
        "speedup_ours_vs_diffusers": speedup,
        "sampling_tflops_ours_bf16": median.get("sample_ours_bf16", 0) * fwd_flops / b / 1e12,
        "deviation_from_ours_fp32": deviation,
        "largest_batch_bf16": {**largest, "cap": args.max_batch},
        "rounds_images_per_s": rates,
        "config": {k: v for k, v in vars(cfg).items() if not k.startswith("_")},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    for k, v in median.items():
        print(f"{k:28s} {v:10.0f} img/s")
    print("speedup ours/diffusers:", {k: round(v, 3) for k, v in speedup.items()})
    print("largest batch (bf16):", largest)
    print("deviation:", {k: f"{v['max_rel']:.2e}" for k, v in deviation.items()})
    return result


if __name__ == "__main__":
    main()
