"""FID against the number of network evaluations (NFE) for every sampler, from one trained LDM.

    python benchmarks/samplers.py                       # uses the Fashion-MNIST f=4 model of pixel_vs_latent
    python benchmarks/samplers.py --num-samples 250

DDPM ancestral with all 1000 steps, DDIM (η = 0) with 10/20/50/100 steps, DPM-Solver++(2M) with 10/20,
Euler and Heun on Karras sigmas (Heun's NFE is 2·steps − 1). Every point uses the same seed, the same
number of samples and the same cached reference features. Writes benchmarks/results/samplers.json and a
plot, then regenerates docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, RUNS, machine, regenerate_docs, setup, write_result  # noqa: E402

from latentdiff.data.load import load_dataset  # noqa: E402
from latentdiff.evaluation import evaluate_generation  # noqa: E402
from latentdiff.figures import line_plot  # noqa: E402
from latentdiff.metrics.inception import InceptionFeatures  # noqa: E402
from latentdiff.pipeline import LatentDiffusionPipeline  # noqa: E402

GRID = [
    ("ddpm", 1000),
    ("ddim", 10),
    ("ddim", 20),
    ("ddim", 50),
    ("ddim", 100),
    ("dpmpp_2m", 10),
    ("dpmpp_2m", 20),
    ("euler", 20),
    ("heun", 10),
    ("heun", 20),
]


def nfe(sampler: str, steps: int) -> int:
    return 2 * steps - 1 if sampler == "heun" else steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--run", type=Path, default=RUNS / "pvl_fashion-mnist_latent_f4", help="trained run folder"
    )
    ap.add_argument("--num-samples", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    setup()
    if not (args.run / "unet").is_dir():
        raise SystemExit(
            f"{args.run} has no trained U-Net: run benchmarks/pixel_vs_latent.py first (or pass --run)"
        )
    pipe = LatentDiffusionPipeline.from_pretrained(args.run)
    pipe.progress = False
    reference = load_dataset("fashion-mnist", "test", 32, 1)
    extractor = InceptionFeatures()
    entries = []
    for sampler, steps in GRID:
        r = evaluate_generation(
            pipe,
            reference,
            args.num_samples,
            steps,
            sampler,
            1.0,
            args.num_samples,
            args.seed,
            extractor=extractor,
            reconstruction=False,
        )
        entries.append(
            {
                "sampler": sampler,
                "steps": steps,
                "nfe": nfe(sampler, steps),
                "fid": r["fid"],
                "kid_mean": r["kid_mean"],
                "seconds_per_image": r["sampling_seconds_per_image"],
            }
        )
        print(entries[-1], flush=True)
    series: dict[str, tuple[list[float], list[float]]] = {}
    for e in entries:
        xs, ys = series.setdefault(e["sampler"], ([], []))
        xs.append(e["nfe"])
        ys.append(e["fid"])
    line_plot(
        RESULTS / "samplers.png",
        series,
        xlabel="network evaluations (NFE)",
        ylabel="FID",
        logx=True,
        title=f"Fashion-MNIST LDM (f=4): FID vs NFE, {args.num_samples} samples",
    )
    write_result(
        "samplers",
        {
            "benchmark": "samplers",
            "machine": machine(),
            "model": str(args.run.name),
            "num_samples": args.num_samples,
            "reference": f"fashion-mnist test ({args.num_samples} images)",
            "protocol": r["protocol"],
            "seed": args.seed,
            "entries": entries,
            "plot": "samplers.png",
        },
    )
    regenerate_docs()


if __name__ == "__main__":
    main()
