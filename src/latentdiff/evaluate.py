"""Measurements of trained models on a dataset split: the autoencoder's reconstruction quality and
compression (Stage 1)."""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from latentdiff.autoencoder.model import Autoencoder
from latentdiff.data.dataset import ImageDataset
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
