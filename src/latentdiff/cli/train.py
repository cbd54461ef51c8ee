"""Commands that train or prepare models: train-autoencoder, encode, train-diffusion, import-autoencoder,
eval-autoencoder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from latentdiff.cli.options import add_config_args, add_shortcut, build_config

if TYPE_CHECKING:
    from latentdiff.autoencoder.model import Autoencoder

EXAMPLES = {
    "train-autoencoder": "latentdiff train-autoencoder --data fashion-mnist --kind kl --f 4 --out runs/fm",
    "encode": "latentdiff encode runs/fm/autoencoder --data fashion-mnist --out runs/fm/latents",
    "train-diffusion": "latentdiff train-diffusion --out runs/fm --steps 8000   # uses runs/fm/autoencoder",
    "import-autoencoder": "latentdiff import-autoencoder path/to/sd-vae --out runs/sd --data my_images/ "
    "--resolution 256",
    "eval-autoencoder": "latentdiff eval-autoencoder runs/fm/autoencoder --data fashion-mnist --split test",
}


def _data_flags(p: argparse.ArgumentParser, prefix: str = "data") -> None:
    add_shortcut(p, "--data", f"{prefix}.dataset", "built-in dataset name or image folder")
    add_shortcut(p, "--resolution", f"{prefix}.resolution", "image side in pixels", type=int)
    add_shortcut(p, "--channels", f"{prefix}.channels", "1 (grey) or 3 (RGB)", type=int)
    add_shortcut(p, "--limit", f"{prefix}.limit", "use only this many training images", type=int)
    p.add_argument(
        "--flip",
        action="store_const",
        const=True,
        default=None,
        help="horizontal-flip augmentation (= --set data.flip=true)",
    )


def _train_flags(p: argparse.ArgumentParser) -> None:
    add_shortcut(p, "--steps", "train.steps", "optimiser steps", type=int)
    add_shortcut(p, "--batch-size", "train.batch_size", "global batch size", type=int)
    add_shortcut(p, "--lr", "train.lr", "peak learning rate", type=float)
    add_shortcut(p, "--precision", "train.precision", "fp32 | bf16 | fp16 (CUDA only)")
    add_shortcut(
        p, "--minutes", "train.max_minutes", "stop after this many minutes (0 = no limit)", type=float
    )
    add_shortcut(p, "--device", "train.device", "auto | cpu | cuda | cuda:N")
    add_shortcut(p, "--seed", "train.seed", "random seed", type=int)
    p.add_argument("--out", required=True, type=Path, help="run folder (created if missing)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start this stage from scratch although the run folder holds its trained weights or "
        "checkpoints (they are deleted); without it or --resume such a folder is refused",
    )
    add_config_args(p)


def register(sub: argparse._SubParsersAction, formatter) -> None:
    def parser(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=help, description=f"{help}\n\nexample:\n  {EXAMPLES[name]}", formatter_class=formatter
        )

    p = parser("train-autoencoder", "Stage 1: train a KL / VQ autoencoder (or set up the identity baseline)")
    _data_flags(p)
    add_shortcut(p, "--kind", "model.kind", "kl | vq | identity")
    p.add_argument(
        "--f", type=int, choices=(1, 2, 4, 8, 16), help="downsampling factor (sets model.channel_mult)"
    )
    add_shortcut(p, "--latent-channels", "model.latent_channels", "channels of the latent", type=int)
    add_shortcut(p, "--codebook-size", "model.codebook_size", "VQ codebook size K", type=int)
    add_shortcut(p, "--disc-start", "loss.disc_start", "step at which the PatchGAN term starts", type=int)
    add_shortcut(p, "--disc-weight", "loss.disc_weight", "weight of the GAN term (0 = off)", type=float)
    _train_flags(p)
    p.set_defaults(func=cmd_train_autoencoder)

    p = parser("encode", "encode a dataset once into a memory-mapped latent cache")
    p.add_argument("autoencoder", type=Path, help="autoencoder folder (or a run folder holding autoencoder/)")
    p.add_argument("--data", required=True, help="built-in dataset name or image folder")
    p.add_argument("--split", default="train")
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--flip", action="store_true", help="also store the encodings of flipped images")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, type=Path, help="cache folder to write")
    p.set_defaults(func=cmd_encode)

    p = parser(
        "train-diffusion", "Stage 2: train the diffusion backbone on the latents of a frozen autoencoder"
    )
    p.add_argument(
        "--autoencoder",
        type=Path,
        default=None,
        help="autoencoder folder or run folder (default: OUT/autoencoder)",
    )
    p.add_argument(
        "--latents", type=Path, default=None, help="an existing latent cache (default: encode now)"
    )
    _data_flags(p)
    add_shortcut(p, "--backbone", "backbone", "unet | dit (the DiT's sizes: --set dit.depth=... etc.)")
    add_shortcut(p, "--prediction", "diffusion.prediction", "preconditioning: eps | v | x0 | edm")
    add_shortcut(p, "--noise-sampling", "diffusion.noise_sampling", "uniform | log_normal | logit_normal")
    add_shortcut(p, "--loss-weighting", "diffusion.loss_weighting", "uniform | min_snr | edm")
    p.add_argument(
        "--edm",
        action="store_true",
        help="EDM training (Karras et al. 2022): --prediction edm --noise-sampling log_normal "
        "--loss-weighting edm",
    )
    add_shortcut(p, "--schedule", "diffusion.schedule", "linear | scaled_linear | cosine")
    add_shortcut(
        p, "--conditional", "conditional", "auto | yes | no | text (yes: class labels; text: captions)"
    )
    _train_flags(p)
    p.set_defaults(func=cmd_train_diffusion)

    p = parser(
        "import-autoencoder", "use a diffusers AutoencoderKL folder (e.g. Stable Diffusion's VAE) as Stage 1"
    )
    p.add_argument("source", type=Path, help="folder with config.json + diffusion_pytorch_model.safetensors")
    p.add_argument(
        "--out", required=True, type=Path, help="run folder; the autoencoder goes to OUT/autoencoder"
    )
    p.add_argument("--data", default=None, help="compute the latent scale over this dataset (recommended)")
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--stats-images", type=int, default=10_000)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a trained autoencoder already in OUT (its checkpoints are deleted)",
    )
    p.set_defaults(func=cmd_import_autoencoder)

    p = parser("eval-autoencoder", "PSNR, SSIM, compression ratio and codebook use of an autoencoder")
    p.add_argument("autoencoder", type=Path, help="autoencoder folder (or a run folder holding autoencoder/)")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--limit", type=int, default=None, help="evaluate only this many images")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--json", type=Path, default=None, help="write the results here (default: next to the model)"
    )
    p.add_argument(
        "--rfid",
        type=int,
        default=0,
        metavar="N",
        help="also the rFID of N reconstructions against the same N images (0 = skip)",
    )
    p.set_defaults(func=cmd_eval_autoencoder)


def autoencoder_folder(path: Path) -> Path:
    """Accept the autoencoder folder itself or a run folder that holds one."""
    if (path / "autoencoder" / "config.json").is_file():
        return path / "autoencoder"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no autoencoder at {path} (expected config.json + model.safetensors)")
    return path


def _flip(args: argparse.Namespace) -> list[str]:
    return ["data.flip=true"] if args.flip else []


def cmd_train_autoencoder(args: argparse.Namespace) -> str:
    from latentdiff.autoencoder.config import PRESET_CHANNEL_MULT
    from latentdiff.training.run import train_autoencoder
    from latentdiff.training.stages import AutoencoderStage

    extra = _flip(args)
    if args.f is not None:
        extra.append(f"model.channel_mult={list(PRESET_CHANNEL_MULT[args.f])}")
    stage = build_config(AutoencoderStage, args, extra)
    folder = train_autoencoder(stage, args.out, resume=args.resume, overwrite=args.overwrite)
    return (
        f"autoencoder: {folder}\nreconstructions: {args.out / 'samples'}\n"
        f"logs: tensorboard --logdir {args.out / 'logs'}"
    )


def cmd_encode(args: argparse.Namespace) -> str:
    from latentdiff.autoencoder.model import Autoencoder
    from latentdiff.data.latent_cache import encode_dataset
    from latentdiff.data.load import load_dataset
    from latentdiff.training.distributed import init_distributed

    dist = init_distributed(args.device)
    ae = Autoencoder.from_pretrained(autoencoder_folder(args.autoencoder)).to(dist.device)
    data = load_dataset(args.data, args.split, args.resolution or ae.config.resolution, ae.config.in_channels)
    cache = encode_dataset(ae, data, args.out, args.batch_size, flip=args.flip, device=dist.device)
    return f"latent cache: {cache.path} ({len(cache)} latents of shape {cache.latent_shape})"


def cmd_train_diffusion(args: argparse.Namespace) -> str:
    from latentdiff.training.run import train_diffusion
    from latentdiff.training.stages import DiffusionStage

    edm = ["diffusion.prediction=edm", "diffusion.noise_sampling=log_normal", "diffusion.loss_weighting=edm"]
    stage = build_config(DiffusionStage, args, _flip(args) + (edm if args.edm else []))
    ae = autoencoder_folder(args.autoencoder) if args.autoencoder else None
    folder = train_diffusion(
        stage, args.out, autoencoder=ae, latents=args.latents, resume=args.resume, overwrite=args.overwrite
    )
    return (
        f"{folder.name}: {folder}\nsamples during training: {args.out / 'samples'}\n"
        f"generate: latentdiff sample {args.out} --num-images 16"
    )


def cmd_import_autoencoder(args: argparse.Namespace) -> str:
    from latentdiff.autoencoder.vae_diffusers_format import load_diffusers_autoencoder
    from latentdiff.training.run_folder import plan_start
    from latentdiff.training.run_lock import training_lock

    with training_lock(args.out):
        folder = args.out / "autoencoder"
        replace = plan_start(args.out, "autoencoder", folder, resume=False, overwrite=args.overwrite)
        return _import_autoencoder(args, load_diffusers_autoencoder(args.source), replace)


def _import_autoencoder(args: argparse.Namespace, ae: Autoencoder, replace: bool) -> str:
    from latentdiff.autoencoder.stats import apply_latent_stats, compute_latent_stats
    from latentdiff.data.load import load_dataset
    from latentdiff.training.distributed import resolve_device
    from latentdiff.training.run_folder import clear_stage

    ae = ae.to(resolve_device(args.device))
    note = f"kept the scale factor of {args.source}/config.json: {ae.scale_factor}"
    if args.data:
        data = load_dataset(
            args.data, "train", args.resolution or ae.config.resolution, ae.config.in_channels
        )
        stats = compute_latent_stats(ae, data, args.stats_images)
        apply_latent_stats(ae, stats)
        note = f"latent scale {ae.scale_factor} measured over {stats['num_images']} images of {args.data}"
    if replace:
        clear_stage(args.out, "autoencoder", args.out / "autoencoder")
    folder = ae.save_pretrained(args.out / "autoencoder")
    return f"autoencoder: {folder}\n{note}"


def cmd_eval_autoencoder(args: argparse.Namespace) -> str:
    from latentdiff.autoencoder.model import Autoencoder
    from latentdiff.data.load import load_dataset
    from latentdiff.evaluation import evaluate_autoencoder, reconstruction_fid
    from latentdiff.training.distributed import resolve_device

    folder = autoencoder_folder(args.autoencoder)
    ae = Autoencoder.from_pretrained(folder).to(resolve_device(args.device))
    data = load_dataset(
        args.data,
        args.split,
        args.resolution or ae.config.resolution,
        ae.config.in_channels,
        limit=args.limit,
    )
    result = {
        "autoencoder": str(folder),
        "data": args.data,
        "split": args.split,
        **evaluate_autoencoder(ae, data),
    }
    if args.rfid:
        rfid = reconstruction_fid(ae, data, args.rfid)
        result.update(
            {"rfid": rfid["fid"], "rfid_num_images": rfid["num_real"], "rfid_protocol": rfid["protocol"]}
        )
    out = args.json or folder.parent / f"eval_autoencoder_{args.split}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in result.items()]
    return "\n".join([*lines, f"written to {out}"])
