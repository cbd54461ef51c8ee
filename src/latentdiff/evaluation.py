"""Measurements of trained models on a dataset split: the autoencoder's reconstruction quality and
compression (Stage 1), and FID/KID of generated images (the whole model)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from latentdiff.autoencoder.model import Autoencoder
from latentdiff.data.dataset import ImageDataset, spread_indices
from latentdiff.metrics.image_quality import psnr, ssim


@torch.no_grad()
def evaluate_autoencoder(
    ae: Autoencoder,
    dataset: ImageDataset,
    batch_size: int = 256,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, float | int | str]:
    """PSNR and SSIM of posterior-mode reconstructions over `dataset` (or its first `limit` images), the
    compression ratio d/k and, for VQ, the fraction of codes used and the code perplexity."""
    ae = ae.eval()
    device = ae.device
    n = len(dataset) if limit is None else min(limit, len(dataset))
    psnrs, ssims, codes = [], [], []
    # SSIM's 11×11 window does not fit tiny images (e.g. 8×8 digits): measure those with reflected borders
    border = "valid" if dataset.resolution >= 11 else "reflect"
    for i in tqdm(range(0, n, batch_size), desc="evaluate autoencoder", unit="batch", disable=not progress):
        x, _ = dataset.get_batch(range(i, min(n, i + batch_size)))
        x = x.to(device)
        posterior = ae.encode(x)
        x_rec = ae.decode(posterior.mode()).clamp(-1, 1)
        psnrs.append(psnr(x_rec, x).cpu())
        ssims.append(ssim(x_rec, x, border=border).cpu())
        if ae.kind == "vq":
            codes.append(posterior.indices.flatten().cpu())
    p = torch.cat(psnrs)
    shape = (dataset.channels, dataset.resolution, dataset.resolution)
    k = math.prod(ae.latent_shape(shape))
    result: dict[str, float | int | str] = {
        "kind": ae.kind,
        "num_images": n,
        "psnr": float(p[torch.isfinite(p)].mean()) if torch.isfinite(p).any() else float("inf"),
        "ssim": float(torch.cat(ssims).mean()),
        "ssim_border": border,
        "compression_ratio": math.prod(shape) / k,
        "latent_numbers": k,
        "downsample_factor": ae.downsample_factor,
        "latent_channels": ae.latent_channels,
    }
    if codes:
        idx = torch.cat(codes)
        result["codebook_usage"] = ae.quantize.codebook_usage(idx)
        result["perplexity"] = float(ae.quantize.perplexity(idx))
        result["codebook_size"] = ae.config.codebook_size
    return result


def _batches(images: torch.Tensor, batch_size: int):
    for i in range(0, len(images), batch_size):
        yield images[i : i + batch_size]


def _reference_key_of(dataset: ImageDataset) -> str:
    from latentdiff.metrics.reference_cache import reference_key

    key = reference_key(dataset.name, dataset.split, dataset.resolution)
    return key + "-grey" if dataset.channels == 1 else key


def reference_features_cached(dataset: ImageDataset, num_images: int, protocol_hash: str) -> bool:
    """Whether `reference_features_for(dataset, num_images, …)` would read its features from the cache (an
    extractor with this protocol hash) instead of running Inception-v3 over the images."""
    from latentdiff.metrics.reference_cache import reference_paths

    n = min(num_images, len(dataset))
    return all(path.is_file() for path in reference_paths(_reference_key_of(dataset), n, protocol_hash))


def reference_features_for(dataset: ImageDataset, num_images: int, extractor, progress: bool = True):
    """Cached Inception features of the first `num_images` images (spread over the split) of a dataset."""
    from latentdiff.metrics.reference_cache import reference_features

    n = min(num_images, len(dataset))
    key = _reference_key_of(dataset)

    def images():
        idx = torch.linspace(0, len(dataset) - 1, n).round().long()
        for i in range(0, n, 64):
            yield dataset.get_batch(idx[i : i + 64])[0]

    return reference_features(key, images, n, extractor, progress=progress)


@torch.no_grad()
def reconstruction_fid(
    ae: Autoencoder, dataset: ImageDataset, num_images: int = 1000, extractor=None, progress: bool = True
) -> dict[str, Any]:
    """rFID: FID between `num_images` images of `dataset` (spread over it) and their reconstructions
    D(E(x)) (posterior mode): what the autoencoder alone costs in FID, a floor for the whole model."""
    from latentdiff.metrics.fid_kid import fid_kid_from_features
    from latentdiff.metrics.inception import InceptionFeatures

    extractor = extractor or InceptionFeatures()
    n = min(num_images, len(dataset))
    real = reference_features_for(dataset, n, extractor, progress)
    idx = torch.linspace(0, len(dataset) - 1, n).round().long()
    ae = ae.eval()
    recon = []
    for i in range(0, n, 64):
        x = dataset.get_batch(idx[i : i + 64])[0].to(ae.device)
        recon.append(ae.decode(ae.encode(x).mode()).clamp(-1, 1).cpu())
    fake = extractor.extract(_batches(torch.cat(recon), 64), progress=progress, total=n)
    return fid_kid_from_features(
        real, fake, f"{extractor.protocol}/{extractor.protocol_hash}", kid_subset_size=min(1000, n)
    )


@torch.no_grad()
def evaluate_generation(
    pipe,
    dataset: ImageDataset,
    num_samples: int = 1000,
    steps: int = 20,
    sampler: str = "dpmpp_2m",
    guidance_scale: float = 1.0,
    num_reference: int | None = None,
    seed: int = 0,
    batch_size: int = 250,
    extractor=None,
    progress: bool = True,
    reconstruction: bool = True,
    guidance: str = "cfg",
    sampler_opts: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """FID/KID of `num_samples` generated images against `num_reference` images of `dataset` (default: as
    many as samples), and, with `reconstruction`, the autoencoder's rFID on those reference images.

    A class-conditional model is sampled with balanced labels (image i gets class i mod C), a
    text-conditioned one with the captions of the reference split's images; the protocol,
    both sample counts and the sampler settings are part of the result. `guidance`: as for the pipeline
    ("cfg" classifier-free, "auto" autoguidance with the pipeline's guide model).
    """
    from latentdiff.metrics.fid_kid import fid_kid_from_features
    from latentdiff.metrics.inception import InceptionFeatures

    extractor = extractor or InceptionFeatures()
    n_ref = min(num_reference or num_samples, len(dataset))
    real = reference_features_for(dataset, n_ref, extractor, progress)
    labels = [i % pipe.num_classes for i in range(num_samples)] if pipe.num_classes else None
    prompts = None
    if getattr(pipe, "takes_text", False):
        # text-to-image FID samples from the captions of the reference images (as COCO FID does)
        captions = getattr(dataset, "captions", None) or [[]] * len(dataset)
        order = spread_indices(len(dataset), num_samples)
        prompts = [(captions[order[i % len(order)]] or [""])[0] for i in range(num_samples)]
    start = time.perf_counter()
    fake_images = pipe(
        num_images=num_samples,
        steps=steps,
        sampler=sampler,
        guidance_scale=guidance_scale,
        class_labels=labels,
        prompt=prompts,
        seed=seed,
        output_type="pt",
        batch_size=batch_size,
        guidance=guidance,
        **(sampler_opts or {}),
    )
    sample_seconds = time.perf_counter() - start
    fake = extractor.extract(_batches(fake_images, 64), progress=progress, total=num_samples)
    protocol = f"{extractor.protocol}/{extractor.protocol_hash}"
    result: dict[str, Any] = {
        **fid_kid_from_features(real, fake, protocol, kid_subset_size=min(1000, n_ref, num_samples)),
        "reference": f"{dataset.name} {dataset.split} ({n_ref} images, {dataset.resolution} px)",
        "sampler": sampler,
        **({"sampler_opts": sampler_opts} if sampler_opts else {}),
        "steps": steps,
        "guidance_scale": guidance_scale,
        **({"guidance": "autoguidance"} if guidance == "auto" and guidance_scale != 1.0 else {}),
        "seed": seed,
        **({"prompts": "the first caption of reference images spread over the split"} if prompts else {}),
        "sampling_seconds_per_image": sample_seconds / num_samples,
    }
    if reconstruction:
        result["rfid"] = reconstruction_fid(pipe.autoencoder, dataset, n_ref, extractor, progress)["fid"]
    return result


def how_it_works_figure(pipe, test: ImageDataset, path: Path, psnr: float, seed: int) -> Path:
    """`figures.how_it_works` of a trained pipeline on the first held-out image: x0, z0 = E_φ(x0), D_θ(z0),
    then a sample from z_T through the reverse diffusion (DPM-Solver++ 20 steps) to its decoded image."""
    from latentdiff.figures import how_it_works

    x, y = test.get_batch([0])
    z0 = pipe.encode(x)
    x_rec = pipe.decode(z0)
    steps = 20
    frames = pipe.denoising_trajectory(
        num_images=1,
        steps=steps,
        sampler="dpmpp_2m",
        at=[0, 3, 7, 12, steps - 1],
        guidance_scale=2.0 if pipe.num_classes else 1.0,
        class_labels=[int(y[0])] if pipe.num_classes else None,
        seed=seed,
    )
    noise = pipe.noise(1, torch.Generator().manual_seed(seed))[0]
    trajectory = [(f"step {i + 1}/{steps}", img[0], z[0]) for i, img, z in frames[:-1]]
    final = pipe.decode(frames[-1][2].to(pipe.device))[0].cpu()  # the latent after the last step, decoded
    c, h, w = pipe.latent_shape
    d = x.shape[1] * x.shape[2] * x.shape[3]
    info = {
        "d": d,
        "k": c * h * w,
        "f": pipe.autoencoder.downsample_factor,
        "psnr": psnr,
        "class": (pipe.class_names or ["?"] * pipe.num_classes)[int(y[0])] if pipe.num_classes else "",
    }
    return how_it_works(
        path,
        image=x[0],
        latent=z0[0].cpu(),
        reconstruction=x_rec[0].cpu(),
        noise=noise.cpu(),
        trajectory=trajectory,
        final=final,
        info=info,
    )


def fid_floor(train, test, num_images: int, extractor, progress: bool = True) -> float:
    """FID of real against real at the same N: `num_images` train images against as many held-out ones, the
    best FID any generator can expect to reach at that N (FID is biased upwards at small N)."""
    from latentdiff.metrics.fid import fid_from_features

    # FID only: KID over subsets of all N images would cost 100 N×N kernels (20 min at N = 10,000 here)
    real_test = reference_features_for(test, num_images, extractor, progress)
    real_train = reference_features_for(train, num_images, extractor, progress)
    return float(fid_from_features(real_test, real_train))
