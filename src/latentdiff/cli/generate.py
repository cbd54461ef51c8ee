"""Commands that use a trained run: sample, img2img, inpaint, interpolate."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

EXAMPLES = {
    "sample": "latentdiff sample runs/demo --num-images 16 --class sneaker --guidance 2 --out out/sneakers\n"
    "  latentdiff sample runs/shapes --prompt 'a small red circle in the top left' --negative-prompt "
    "'blue' --guidance 3 --out out/red\n"
    "  latentdiff sample --from-png saved_from_the_web_ui.png --out out/again",
    "img2img": "latentdiff img2img runs/demo --input photo.png --strength 0.6 --out out/edit",
    "inpaint": "latentdiff inpaint runs/demo --input photo.png --mask mask.png --out out/inpaint",
    "interpolate": "latentdiff interpolate runs/demo --seed-a 1 --seed-b 2 --n 8 --out out/walk\n"
    "  latentdiff interpolate runs/shapes --prompt-a 'a red circle' --prompt-b 'a blue square' --seed 3 "
    "--out out/morph",
    "export-diffusers": "latentdiff export-diffusers runs/demo --out exported/",
}


GRID_IMAGES = 64  # sample: the images shown in grid.png (all of them up to this many)


def _sampling_flags(
    p: argparse.ArgumentParser, steps: int = 20, sampler: str = "dpmpp_2m", run_optional: bool = False
) -> None:
    run_help = "run folder holding autoencoder/ and a backbone (unet/ or dit/)"
    if run_optional:
        p.add_argument(
            "run", type=Path, nargs="?", help=f"{run_help}; with --from-png, the PNG's run by default"
        )
    else:
        p.add_argument("run", type=Path, help=run_help)
    p.add_argument("--steps", type=int, default=steps, help="sampler steps (network evaluations for most)")
    p.add_argument(
        "--sampler", default=sampler, help="ddpm | ddim | dpmpp_2m | euler | heun | edm_stochastic"
    )
    p.add_argument(
        "--guidance",
        type=float,
        default=1.0,
        help="classifier-free guidance scale, finite and >= 0 (1 = off, 0 = unconditional); to steer away "
        "from a class use --negative-class, not a negative scale",
    )
    p.add_argument(
        "--class",
        dest="class_label",
        default=None,
        help="class name or index (conditional models), e.g. sneaker",
    )
    p.add_argument(
        "--negative-class",
        dest="negative_class",
        default=None,
        help="class that guidance steers away from instead of the unconditional model (needs --guidance)",
    )
    p.add_argument("--prompt", default=None, help="text prompt (text-conditioned models)")
    p.add_argument(
        "--negative-prompt",
        dest="negative_prompt",
        default=None,
        help="prompt that guidance steers away from, in place of the empty prompt (needs --guidance)",
    )
    p.add_argument(
        "--prompts-file",
        dest="prompts_file",
        type=Path,
        default=None,
        help="a text file of prompts, one per line (sample: --num-images images for each)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, type=Path, help="output folder for PNGs")


def register(sub: argparse._SubParsersAction, formatter) -> None:
    def parser(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=help, description=f"{help}\n\nexample:\n  {EXAMPLES[name]}", formatter_class=formatter
        )

    p = parser("sample", "generate images: noise z_T → reverse diffusion in latent space → decoder")
    _sampling_flags(p, run_optional=True)
    p.add_argument("--num-images", type=int, default=16, help="written to OUT as they are made")
    p.add_argument("--batch-size", type=int, default=64, help="images sampled (and written) together")
    p.add_argument(
        "--autoguidance",
        action="store_true",
        help="--guidance contrasts the model with the run's guide/ model (autoguidance, Karras et al. 2024; "
        "what `latentdiff train` trains and its report uses) instead of its unconditional self",
    )
    p.add_argument(
        "--from-png",
        type=Path,
        default=None,
        metavar="FILE",
        help="make again the image a PNG from the web UI (or from --from-png) was made as: its settings "
        "(class or prompt, seed, steps, sampler, guidance) are read from the PNG's text metadata",
    )
    p.set_defaults(func=cmd_sample, parser_defaults={key: p.get_default(key) for key in _FROM_PNG_SETTINGS})

    p = parser("img2img", "edit images: encode, noise to a strength, denoise (SDEdit in latent space)")
    _sampling_flags(p)
    p.add_argument("--input", required=True, type=Path, help="an image file or a folder of images")
    p.add_argument("--strength", type=float, default=0.6, help="0 = reconstruction, 1 = ignore the input")
    p.set_defaults(func=cmd_img2img)

    p = parser("inpaint", "regenerate the masked region of an image (mask: white = regenerate)")
    _sampling_flags(p, steps=50, sampler="ddim")
    p.add_argument("--input", required=True, type=Path, help="image file")
    p.add_argument("--mask", required=True, type=Path, help="mask image of the same size, white = regenerate")
    p.set_defaults(func=cmd_inpaint)

    p = parser(
        "interpolate",
        "walk between two seeds (spherical interpolation of the initial noise) or, at one --seed, between "
        "two prompts (interpolation of the encoded prompts)",
    )
    _sampling_flags(p)
    p.add_argument("--seed-a", type=int, default=None)
    p.add_argument("--seed-b", type=int, default=None)
    p.add_argument("--prompt-a", default=None, help="first prompt of a walk between prompts at --seed")
    p.add_argument("--prompt-b", default=None, help="last prompt of a walk between prompts at --seed")
    p.add_argument("--n", type=int, default=8, help="number of images including both ends")
    p.set_defaults(func=cmd_interpolate)

    p = parser("export-diffusers", "write a run's backbone, autoencoder and scheduler in diffusers' formats")
    p.add_argument("run", type=Path, help="run folder holding autoencoder/ and a backbone (unet/ or dit/)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.set_defaults(func=cmd_export_diffusers)


def _at_least_one(flag: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{flag} must be at least 1, got {value}")


def _pipeline(args: argparse.Namespace):
    """The run's pipeline, once every sampling flag has been checked (before anything is loaded)."""
    from latentdiff.diffusion.guidance import check_guidance_scale
    from latentdiff.pipeline import LatentDiffusionPipeline

    _at_least_one("--steps", args.steps)
    check_guidance_scale(args.guidance, "--guidance", negative="--negative-class")
    return LatentDiffusionPipeline.from_pretrained(args.run, device=args.device)


def _prompts(args: argparse.Namespace) -> list[str] | None:
    """The prompts of --prompt or --prompts-file (one per non-empty line), None when neither is given."""
    if args.prompt is not None and args.prompts_file is not None:
        raise ValueError("give --prompt or --prompts-file, not both")
    if args.prompts_file is None:
        return None if args.prompt is None else [args.prompt]
    try:
        lines = args.prompts_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--prompts-file {args.prompts_file}: cannot read it ({e})") from e
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise ValueError(f"--prompts-file {args.prompts_file} holds no prompt (one per line)")
    return prompts


def _one_prompt(args: argparse.Namespace) -> str | None:
    prompts = _prompts(args)
    if prompts is not None and len(prompts) > 1:
        raise ValueError(f"this command takes one prompt; {args.prompts_file} holds {len(prompts)}")
    return None if prompts is None else prompts[0]


def _image_size(pipe) -> tuple[int, int]:
    ae = pipe.autoencoder
    return ae.config.in_channels, pipe.backbone.config.sample_size * ae.downsample_factor


def _load_inputs(path: Path, channels: int, size: int) -> tuple[torch.Tensor, list[str]]:
    from latentdiff.data.image_folder import load_image_file

    if not path.exists():
        raise FileNotFoundError(f"input not found: {path}")
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"no images in {path}")
    return torch.stack([load_image_file(f, channels, size) for f in files]), [f.stem for f in files]


def _write(out: Path, images: torch.Tensor, names: list[str], nrow: int | None = None) -> str:
    from latentdiff.io.images import save_grid, save_images

    save_images(out, images, [f"{n}.png" for n in names])
    grid = save_grid(out / "grid.png", images, nrow=nrow, upscale=max(1, 128 // images.shape[-1]))
    return f"{len(images)} images in {out}/ (grid: {grid})"


def _save_png(image: torch.Tensor, path: Path) -> None:
    """Write one image so that an interruption leaves either the whole PNG or none."""
    from latentdiff.io.images import to_pil

    tmp = path.with_name(f".{path.name}.tmp")
    try:
        to_pil(image).save(tmp, format="PNG")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def cmd_sample(args: argparse.Namespace) -> str:
    """Each batch is written as soon as it is decoded: Ctrl-C keeps every image finished so far, and
    only the first `GRID_IMAGES` are held in memory (for grid.png)."""
    from latentdiff.io.images import save_grid

    if args.from_png is not None:
        return _sample_from_png(args)
    if args.run is None:
        raise ValueError("sample needs a run folder (or --from-png FILE, whose run is used)")
    _at_least_one("--num-images", args.num_images)
    _at_least_one("--batch-size", args.batch_size)
    prompts = _prompts(args)
    pipe = _pipeline(args)
    total = args.num_images * (len(prompts) if prompts else 1)
    per_prompt = None if prompts is None else [p for p in prompts for _ in range(args.num_images)]
    batches = pipe.generate_batches(
        num_images=total,
        steps=args.steps,
        sampler=args.sampler,
        guidance_scale=args.guidance,
        class_labels=args.class_label,
        negative_class_labels=args.negative_class,
        seed=args.seed,
        batch_size=args.batch_size,
        prompt=per_prompt,
        negative_prompt=args.negative_prompt,
        guidance="auto" if args.autoguidance else "cfg",
    )
    if prompts is not None:
        return _sample_prompts(args, batches, prompts, total)
    digits = max(4, len(str(args.num_images - 1)))
    written, shown = 0, []
    try:
        for batch in batches:
            args.out.mkdir(parents=True, exist_ok=True)
            for image in batch:
                _save_png(image, args.out / f"sample_{written:0{digits}d}.png")
                written += 1
            shown.append(batch[: max(0, GRID_IMAGES - sum(len(b) for b in shown))])
    except KeyboardInterrupt:
        raise KeyboardInterrupt(
            f"{written} of {args.num_images} images were written to {args.out}/ before the interruption"
        ) from None
    grid_images = torch.cat(shown)
    grid = save_grid(args.out / "grid.png", grid_images, upscale=max(1, 128 // grid_images.shape[-1]))
    first = f"the first {len(grid_images)}" if len(grid_images) < written else "all"
    return f"{written} images in {args.out}/ (grid of {first}: {grid})"


def _sample_prompts(args: argparse.Namespace, batches, prompts: list[str], total: int) -> str:
    """Write each image as it is made (`sample_PPPP_IIII.png`: prompt P, image I) and `grid.png` with one
    row per prompt (up to 16 prompts × 8 images), the prompt on the left; `prompts.txt` lists them."""
    from latentdiff.figures.grids import class_grid

    cols, rows = min(args.num_images, 8), min(len(prompts), 16)
    written, kept = 0, []
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "prompts.txt").write_text("".join(f"{i:04d}\t{p}\n" for i, p in enumerate(prompts)))
    try:
        for batch in batches:
            for image in batch:
                p, i = divmod(written, args.num_images)
                _save_png(image, args.out / f"sample_{p:04d}_{i:04d}.png")
                if p < rows and i < cols:
                    kept.append(image)
                written += 1
    except KeyboardInterrupt:
        raise KeyboardInterrupt(
            f"{written} of {total} images were written to {args.out}/ before the interruption"
        ) from None
    grid = class_grid(torch.stack(kept), prompts[:rows], args.out / "grid.png", cols=cols)
    return (
        f"{written} images for {len(prompts)} prompt(s) in {args.out}/ (grid labelled with prompts: {grid})"
    )


# flags whose value --from-png takes from the PNG instead: giving one too is refused rather than ignored
_FROM_PNG_SETTINGS = {
    "steps": "--steps",
    "sampler": "--sampler",
    "guidance": "--guidance",
    "class_label": "--class",
    "negative_class": "--negative-class",
    "prompt": "--prompt",
    "negative_prompt": "--negative-prompt",
    "prompts_file": "--prompts-file",
    "seed": "--seed",
    "num_images": "--num-images",
    "batch_size": "--batch-size",
}


def _sample_from_png(args: argparse.Namespace) -> str:
    """The image that `args.from_png` says how to make: one `pipe(num_images=1, seed=…)` call with its
    settings (`ui.reproduce.generate_image`, the call the web UI made), written with the same metadata."""
    from dataclasses import replace

    from latentdiff import __version__
    from latentdiff.io.generation_params import read_generation_params, save_png_with_params
    from latentdiff.io.images import to_pil
    from latentdiff.pipeline import LatentDiffusionPipeline
    from latentdiff.ui.reproduce import generate_image

    defaults = args.parser_defaults
    given = [flag for key, flag in _FROM_PNG_SETTINGS.items() if getattr(args, key) != defaults[key]]
    if given:
        raise ValueError(
            f"--from-png takes every setting from {args.from_png}; drop {', '.join(given)} "
            "(or sample without --from-png)"
        )
    params = read_generation_params(args.from_png)
    if params.mode != "generate":
        raise ValueError(
            f"{args.from_png} was made by {params.mode}, which needs its input image too; "
            f"--from-png makes generated images again (its settings: {params.summary()})"
        )
    run = args.run if args.run is not None else Path(params.run)
    if not params.run and args.run is None:
        raise ValueError(
            f"{args.from_png} names no run folder: pass one, `latentdiff sample RUN --from-png …`"
        )
    pipe = LatentDiffusionPipeline.from_pretrained(run, device=args.device)
    pipe.progress = False
    image = generate_image(pipe, params)[0]
    out = args.out / f"{args.from_png.stem}.png"
    if out.resolve() == args.from_png.resolve():
        out = args.out / f"{args.from_png.stem}_again.png"
    save_png_with_params(to_pil(image), out, replace(params, run=str(run), version=__version__))
    return f"{out} (run {run}, {params.summary()})"


def cmd_img2img(args: argparse.Namespace) -> str:
    pipe = _pipeline(args)
    channels, size = _image_size(pipe)
    inputs, names = _load_inputs(args.input, channels, size)
    images = pipe.img2img(
        inputs,
        strength=args.strength,
        steps=args.steps,
        sampler=args.sampler,
        guidance_scale=args.guidance,
        class_labels=args.class_label,
        negative_class_labels=args.negative_class,
        seed=args.seed,
        prompt=_one_prompt(args),
        negative_prompt=args.negative_prompt,
    )
    return _write(args.out, images, names)


def cmd_inpaint(args: argparse.Namespace) -> str:
    from latentdiff.data.image_folder import load_image_file

    pipe = _pipeline(args)
    channels, size = _image_size(pipe)
    image, names = _load_inputs(args.input, channels, size)
    mask = load_image_file(args.mask, 1)  # no resizing: a mask of the wrong size is an error, not a guess
    if mask.shape[-2:] != image.shape[-2:]:
        raise ValueError(
            f"mask {args.mask} is {mask.shape[-1]}×{mask.shape[-2]} px, but the model's images are "
            f"{size}×{size} px"
        )
    out = pipe.inpaint(
        image,
        (mask > 0).float(),
        steps=args.steps,
        sampler=args.sampler,
        guidance_scale=args.guidance,
        class_labels=args.class_label,
        negative_class_labels=args.negative_class,
        seed=args.seed,
        prompt=_one_prompt(args),
        negative_prompt=args.negative_prompt,
    )
    return _write(args.out, out, names)


def _walk_options(args: argparse.Namespace) -> dict:
    return dict(
        n=args.n, steps=args.steps, sampler=args.sampler, guidance_scale=args.guidance,
        negative_prompt=args.negative_prompt,
    )  # fmt: skip


def cmd_interpolate(args: argparse.Namespace) -> str:
    seeds = args.seed_a is not None or args.seed_b is not None
    prompts = args.prompt_a is not None or args.prompt_b is not None
    if seeds == prompts:
        raise ValueError(
            "give --seed-a and --seed-b (a walk between seeds) or --prompt-a and --prompt-b (between prompts)"
        )
    if prompts:
        return _interpolate_prompts(args)
    if args.seed_a is None or args.seed_b is None:
        raise ValueError("a walk between seeds needs both --seed-a and --seed-b")
    images = _pipeline(args).interpolate(
        args.seed_a,
        args.seed_b,
        class_labels=args.class_label,
        negative_class_labels=args.negative_class,
        prompt=_one_prompt(args),
        **_walk_options(args),
    )
    return _write(args.out, images, [f"interp_{i:02d}" for i in range(len(images))], nrow=len(images))


def _interpolate_prompts(args: argparse.Namespace) -> str:
    """`interp_NN.png` for each image and `grid.png`: the strip, titled with both prompts."""
    from latentdiff.figures.grids import class_grid
    from latentdiff.io.images import save_images

    if args.prompt_a is None or args.prompt_b is None:
        raise ValueError("a walk between prompts needs both --prompt-a and --prompt-b")
    flags = {"--prompt": args.prompt, "--prompts-file": args.prompts_file, "--class": args.class_label}
    given = [
        flag
        for flag, value in {**flags, "--negative-class": args.negative_class}.items()
        if value is not None
    ]
    if given:
        raise ValueError(f"a walk between --prompt-a and --prompt-b takes no {', '.join(given)}")
    images = _pipeline(args).interpolate_prompts(
        args.prompt_a, args.prompt_b, seed=args.seed, **_walk_options(args)
    )
    save_images(args.out, images, [f"interp_{i:02d}.png" for i in range(len(images))])
    title = f"{args.prompt_a!r} → {args.prompt_b!r}"
    grid = class_grid(images, [f"seed {args.seed}"], args.out / "grid.png", cols=len(images), title=title)
    return f"{len(images)} images from {args.prompt_a!r} to {args.prompt_b!r} in {args.out}/ (strip: {grid})"


def cmd_export_diffusers(args: argparse.Namespace) -> str:
    from latentdiff.diffusers_export import export_to_diffusers

    written = export_to_diffusers(args.run, args.out)
    return "\n".join(f"{name}: {path}" for name, path in written.items())
