"""The whole job in one command: `latentdiff train` (any folder or built-in dataset, sized for a time budget)
and `latentdiff demo` (both stages on Fashion-MNIST with the demo's fixed recipe), figures and a report."""

from __future__ import annotations

import argparse
from pathlib import Path

# the text-to-image demo's budget on emoji, evaluation included (the issue allows 20 minutes on 2 CPU cores)
TEXT_DEMO_MINUTES = 18.0


def register(sub: argparse._SubParsersAction, formatter) -> None:
    t = sub.add_parser(
        "train",
        help="train both stages on a folder or built-in dataset, sized for this machine and a time budget",
        description="Reads the data (channels, resolution, classes), measures this machine's speed for each "
        "size preset, plans sizes and the time of each stage, prints the plan, trains Stage 1, the latent "
        "statistics, encoding and Stage 2, then evaluates on the held-out split (a folder without test/ "
        "holds out 10 %% of its images by a hash of their path) and writes samples.png, how_it_works.png, "
        "metrics.json and report.md into the run folder."
        "\n\nexamples:\n  latentdiff train --data my_icons/ --out runs/icons --minutes 20"
        "\n  latentdiff train --data fashion-mnist --out runs/fm --size small"
        "\n  latentdiff train --data my_icons/ --out runs/icons --minutes 20 --resume   # after Ctrl-C",
        formatter_class=formatter,
    )
    t.add_argument("--data", required=True, help="image folder (class sub-folders optional) or built-in name")
    t.add_argument("--out", required=True, type=Path, help="run folder")
    budget = t.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help="wall-clock budget, evaluation included")
    budget.add_argument(
        "--size",
        choices=("tiny", "small", "base", "large"),
        help="a fixed size for both stages (default without --minutes: small on CPU, base on GPU)",
    )
    t.add_argument(
        "--steps",
        type=int,
        nargs=2,
        metavar=("STAGE1", "STAGE2"),
        help="a fixed amount of work instead of a time budget (default with --size: 6000 10000)",
    )
    t.add_argument("--resolution", type=int, help="image side in pixels (default: from the images' sizes)")
    t.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--resume", action="store_true", help="continue a stopped run with its plan")
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="train again from scratch in a run folder that holds a run (its weights are deleted)",
    )
    t.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "demo",
        help="train a class-conditional LDM on Fashion-MNIST and write samples, figures and a report",
        description="Stage 1 (KL autoencoder, f=4) and Stage 2 (class-conditional U-Net) on Fashion-MNIST, "
        "then samples.png, how_it_works.png and report.md in the run folder. About 15 minutes on 2 CPU "
        "cores; a second run reuses the finished stages.\n\nexample:\n  latentdiff demo --out runs/demo",
        formatter_class=formatter,
    )
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/demo, runs/text-demo)")
    p.add_argument("--quick", action="store_true", help="a ~2-minute version (small budgets)")
    p.add_argument(
        "--preset",
        choices=("full", "quick", "tiny", "text"),
        default=None,
        help="training budget; --quick is --preset quick, tiny is a seconds-long smoke test; text is the "
        f"text-to-image demo: `latentdiff train --data emoji --minutes {TEXT_DEMO_MINUTES:g}` (run folder "
        "runs/text-demo unless --out), with prompts.png",
    )
    p.add_argument("--resume", action="store_true", help="text preset: continue a stopped run")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)


def cmd_train(args: argparse.Namespace) -> str:
    from latentdiff.workflow import train_everything

    r = train_everything(
        args.data,
        args.out,
        minutes=args.minutes,
        size=args.size,
        resolution=args.resolution,
        resume=args.resume,
        overwrite=args.overwrite,
        device=args.device,
        seed=args.seed,
        steps=tuple(args.steps) if args.steps else None,
    )
    m = r.metrics
    fid = m["fid"]
    scores = (
        f"FID {fid['fid']:.1f} at N = {fid['num_fake']} (real-vs-real floor {fid['floor_real_vs_real']:.1f})"
        if fid
        else "FID not measured (no Inception weights)"
    )
    prompts = f"  {r.run_dir / 'prompts.png'}\n" if (r.run_dir / "prompts.png").is_file() else ""
    return (
        f"done in {m['minutes']['total']:.1f} min — results in {r.run_dir}/:\n"
        f"  {r.samples}\n{prompts}  {r.run_dir / 'how_it_works.png'}\n  {r.report}\n"
        f"held-out PSNR {m['reconstruction']['psnr']:.2f} dB; {scores}"
    )


def cmd_demo(args: argparse.Namespace) -> str:
    from latentdiff.demo import run_demo

    preset = args.preset or ("quick" if args.quick else "full")
    if preset == "text":
        text = argparse.Namespace(
            data="emoji", out=args.out or Path("runs/text-demo"), minutes=TEXT_DEMO_MINUTES, size=None,
            resolution=None, resume=args.resume, overwrite=False, device="auto", seed=args.seed, steps=None,
        )  # fmt: skip
        return cmd_train(text)
    result = run_demo(args.out or Path("runs/demo"), preset=preset, seed=args.seed)
    m = result.metrics
    return (
        f"done in {m['total_minutes']:.1f} min — results in {result.run_dir}/:\n"
        f"  {result.samples}        one row per class\n"
        f"  {result.how_it_works}   the latent diffusion data flow on a test image\n"
        f"  {result.report}         sizes, times, PSNR {m['reconstruction']['psnr']:.2f} dB"
    )
