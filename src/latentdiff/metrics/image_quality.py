"""Full-reference image quality: PSNR and SSIM per image, for images in [-1, 1] (grey or RGB).

SSIM is Wang et al. 2004, "Image Quality Assessment: From Error Visibility to Structural Similarity",
eq. 13 with the paper's constants: an 11×11 Gaussian window of σ = 1.5 (separable, normalised),
K1 = 0.01, K2 = 0.03, dynamic range L = 1 on images rescaled to [0, 1], computed per channel and averaged
over channels and window positions. Borders follow one of two conventions:
- "valid" (default): only windows that lie inside the image, as in the paper's MATLAB code and
  scikit-image (`structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=1)`);
- "reflect": every pixel, with the image reflect-padded by 5, as torchmetrics ≥ 1.0
  `structural_similarity_index_measure(data_range=1.0)` averages.
Both equal torchmetrics' SSIM map on the same region (tests/metrics/test_image_quality.py).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _check_pair(x: Tensor, y: Tensor, what: str) -> None:
    if x.shape != y.shape or x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(
            f"{what}: expected two (N, 1|3, H, W) batches of one shape, got {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        )


def psnr(x: Tensor, y: Tensor, data_range: float = 2.0) -> Tensor:
    """Per-image PSNR in dB, 10·log10(data_range² / MSE), MSE over C, H, W in float64; inf when equal.

    data_range = 2 for images in [-1, 1] (the peak-to-peak range). The mean over a set is `.mean()`.
    """
    _check_pair(x, y, "psnr")
    mse = (x.double() - y.double()).square().flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse)


def _gaussian_window(dtype: torch.dtype, device: torch.device) -> Tensor:
    half = (SSIM_WINDOW - 1) / 2
    offsets = torch.arange(SSIM_WINDOW, dtype=dtype, device=device) - half
    g = torch.exp(-(offsets**2) / (2 * SSIM_SIGMA**2))
    return g / g.sum()


def _gaussian_filter(x: Tensor) -> Tensor:
    """Separable depthwise Gaussian blur without padding: output shrinks by SSIM_WINDOW − 1."""
    c = x.shape[1]
    g = _gaussian_window(x.dtype, x.device)
    x = F.conv2d(x, g.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, g.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)


def ssim(x: Tensor, y: Tensor, border: Literal["valid", "reflect"] = "valid") -> Tensor:
    """Per-image SSIM (Wang et al. 2004, eq. 13) of images in [-1, 1]; 1 for identical images."""
    _check_pair(x, y, "ssim")
    if border not in ("valid", "reflect"):
        raise ValueError(f"border must be 'valid' or 'reflect', got {border!r}")
    h, w = x.shape[-2:]
    pad = SSIM_WINDOW // 2
    if border == "valid" and min(h, w) < SSIM_WINDOW or border == "reflect" and min(h, w) <= pad:
        raise ValueError(f"ssim: images of {h}x{w} are too small for the {SSIM_WINDOW}x{SSIM_WINDOW} window")
    a = (x.double() + 1) / 2
    b = (y.double() + 1) / 2
    if border == "reflect":
        a = F.pad(a, (pad, pad, pad, pad), mode="reflect")
        b = F.pad(b, (pad, pad, pad, pad), mode="reflect")
    n = a.shape[0]
    moments = _gaussian_filter(torch.cat([a, b, a * a, b * b, a * b]))
    mu_a, mu_b, e_aa, e_bb, e_ab = moments.split(n)
    var_a = (e_aa - mu_a**2).clamp_min(0)
    var_b = (e_bb - mu_b**2).clamp_min(0)
    cov = e_ab - mu_a * mu_b
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return ssim_map.flatten(1).mean(1)


def reconstruction_metrics(x: Tensor, y: Tensor) -> dict[str, float | int]:
    """Mean PSNR (dB; images with MSE 0 excluded from the mean, counted in `num_identical`) and mean SSIM."""
    per_image_psnr = psnr(x, y)
    finite = per_image_psnr[torch.isfinite(per_image_psnr)]
    return {
        "psnr": float(finite.mean()) if len(finite) else math.inf,
        "ssim": float(ssim(x, y).mean()),
        "num_images": int(x.shape[0]),
        "num_identical": int(len(per_image_psnr) - len(finite)),
    }
