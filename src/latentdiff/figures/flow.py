"""The "how it works" figure: the latent diffusion data flow drawn on real images."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from latentdiff.figures.canvas import (
    TEXT,
    _abs_limit,
    _Canvas,
    _check_images,
    _check_latent,
    _fmt,
    _psnr,
    _psnr_text,
    _show_image,
    _show_latent,
    _write_png,
)

_IMG, _LEFT, _SEP = 1.55, 2.3, 3.75  # image panel, label column and row-rule positions (inches)


def _shape(t: torch.Tensor) -> str:
    return "×".join(str(s) for s in t.shape)


def _check_same_shape(name: str, t: object, ref_name: str, ref: torch.Tensor) -> None:
    if not isinstance(t, torch.Tensor) or t.shape != ref.shape:
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name} must have the shape of {ref_name} {tuple(ref.shape)}, got {got}")


def how_it_works(
    path: str | Path,
    *,
    image: torch.Tensor,
    latent: torch.Tensor,
    reconstruction: torch.Tensor,
    noise: torch.Tensor,
    trajectory: Sequence[tuple[str, torch.Tensor, torch.Tensor]],
    final: torch.Tensor,
    info: Mapping[str, object],
) -> Path:
    """Latent diffusion on real images, in two rows (Rombach et al. 2022, "High-Resolution Image Synthesis
    with Latent Diffusion Models", Fig. 3 and Sec. 3).

    Top, Stage 1: x0 ∈ R^d → z0 = E_φ(x0) ∈ R^k (every channel as a heatmap) → D_θ(z0), with d, k, f and the
    reconstruction PSNR. Bottom, generation: z_T ~ N(0, I) → the noisy latents z_t (channel 0) of
    `trajectory` = [(label, decoded prediction x̂0, z_t), ...], each above its decoded x̂0 → x_novel.
    `info` may give d, k, f and psnr (derived from the tensors when absent; d and k must agree with them);
    any other keys are printed in a footnote.
    """
    image = _check_images("image", image, ndim=3)
    latent = _check_latent("latent", latent)
    _check_same_shape("reconstruction", reconstruction, "image", image)
    _check_same_shape("final", final, "image", image)
    _check_same_shape("noise", noise, "latent", latent)
    steps = list(trajectory)
    for i, entry in enumerate(steps):
        if len(entry) != 3:
            raise ValueError(
                f"trajectory[{i}] must be (label, decoded x̂0, latent z_t), got {len(entry)} items"
            )
        _check_same_shape(f"trajectory[{i}] decoded x̂0", entry[1], "image", image)
        _check_same_shape(f"trajectory[{i}] latent z_t", entry[2], "latent", latent)
    if not isinstance(info, Mapping):
        raise ValueError(f"info must be a mapping such as {{'d': 1024, 'k': 256}}, got {type(info).__name__}")
    d, k = int(info.get("d", image.numel())), int(info.get("k", latent.numel()))
    if d != image.numel() or k != latent.numel():
        raise ValueError(
            f"info: d={d}, k={k} disagree with image {_shape(image)} (d={image.numel()}) "
            f"and latent {_shape(latent)} (k={latent.numel()})"
        )
    facts = {
        "d": d,
        "k": k,
        "f": float(info.get("f", image.shape[-1] / latent.shape[-1])),
        "psnr": float(info.get("psnr", _psnr(reconstruction, image))),
    }
    extra = {key: v for key, v in info.items() if key not in facts}

    # Layout in inches. The top row is fixed; the bottom row's cells shrink (to a floor) as steps are added.
    n = len(steps)
    gap = 0.55 if n <= 6 else 0.45
    cell = min(1.15, max(0.7, 8.0 / (n + 1) - gap))
    final_size = min(1.9, 2 * cell + 0.2)
    per_row = min(latent.shape[0], 4)
    lrows = math.ceil(latent.shape[0] / per_row)
    lc = min(0.78, (_IMG - 0.08 * (lrows - 1)) / lrows)
    block_w = per_row * lc + (per_row - 1) * 0.08
    top_w = 0.4 + _IMG + 1.5 + block_w + 1.5 + _IMG + 3.4
    bottom_w = _LEFT + (n + 1) * (cell + gap) + final_size + 0.5
    yz = _SEP + 1.0  # top of the latent row
    yx = yz + cell + 0.55  # top of the decoded row
    fy = (yz + yx + cell - final_size) / 2
    c = _Canvas(max(bottom_w, top_w, 12.0), max(yx + cell, fy + final_size + 0.55) + 0.45)
    title = "How latent diffusion makes an image: compress once, then denoise a small latent"
    c.text(c.w / 2, 0.3, title, ha="center", va="center", fontsize=16, weight="bold")
    _draw_stage1(c, image, latent, reconstruction, facts, lc, per_row, block_w)
    c.line(0.3, _SEP, c.w - 0.3, _SEP, style="-", color="#cccccc", lw=1)
    _draw_generation(c, noise, steps, final, cell, gap, final_size, yz, yx, fy)
    foot = ["latent heatmaps: blue < 0 < red, one colour scale per row"]
    foot += [f"{key}: {_fmt(v) if isinstance(v, float) else v}" for key, v in extra.items()]
    c.text(0.3, c.h - 0.2, "   ·   ".join(foot), va="center", fontsize=9, color="#666666")
    return _write_png(c.fig, path)


def _draw_stage1(c, image, latent, reconstruction, facts, lc, per_row, block_w) -> None:
    """x0 →E_φ→ the channels of z0 (shared symmetric colour scale, with a colour bar) →D_θ→ D_θ(z0)."""
    d, k, y0, mid = facts["d"], facts["k"], 1.25, 1.25 + _IMG / 2
    c.heading(0.8, "Stage 1: perceptual compression (an autoencoder, trained first)", "#1f4e79")
    _show_image(c.axes(0.4, y0, _IMG, _IMG), image)
    c.caption(
        0.4 + _IMG / 2, y0 + _IMG + 0.12, f"input $x_0 \\in \\mathbb{{R}}^d$\nd = {d:,} ({_shape(image)})"
    )
    x_lat = 0.4 + _IMG + 1.5
    c.arrow(0.5 + _IMG, mid, x_lat - 0.1, mid, "encoder $E_\\phi$")
    lim, channels = _abs_limit(latent), latent.shape[0]
    ly = mid - (math.ceil(channels / per_row) * (lc + 0.08) - 0.08) / 2
    for ch in range(channels):
        r, col = divmod(ch, per_row)
        ax = c.axes(x_lat + col * (lc + 0.08), ly + r * (lc + 0.08), lc, lc)
        im = _show_latent(ax, latent[ch], lim)
        if channels <= 8:
            ax.set_title(f"ch {ch}", fontsize=9, pad=2, color=TEXT)
    bar = c.fig.colorbar(im, cax=c.axes(x_lat, y0 + _IMG + 0.14, block_w, 0.09), orientation="horizontal")
    bar.ax.tick_params(labelsize=8, length=2, pad=1)
    c.caption(
        x_lat + block_w / 2,
        y0 + _IMG + 0.5,
        f"latent $z_0 = E_\\phi(x_0) \\in \\mathbb{{R}}^k$, k = {k:,} ({_shape(latent)})\n"
        f"$k \\ll d$: {_fmt(d / k)}× fewer numbers, f = {_fmt(facts['f'])}",
    )
    x_rec = x_lat + block_w + 1.5
    c.arrow(x_lat + block_w + 0.1, mid, x_rec - 0.1, mid, "decoder $D_\\theta$")
    _show_image(c.axes(x_rec, y0, _IMG, _IMG), reconstruction)
    psnr = _psnr_text(facts["psnr"])
    c.caption(x_rec + _IMG / 2, y0 + _IMG + 0.12, f"reconstruction $D_\\theta(z_0)$\n{psnr} vs $x_0$")
    why = (
        "Trained first, on its own, so that\n$D_\\theta(E_\\phi(x)) \\approx x$: the latent keeps\n"
        f"what the eye needs. Diffusion then\nworks on k = {k:,} numbers instead\n"
        f"of d = {d:,} pixels: cheaper to\ntrain and to sample."
    )
    c.text(x_rec + _IMG + 0.35, mid, why, va="center", linespacing=1.5, color="#444444")


def _draw_generation(c, noise, steps, final, cell, gap, final_size, yz, yx, fy) -> None:
    """z_T → z_t per trajectory entry (channel 0) above its decoded x̂0 → x_novel, framed in green."""
    c.heading(
        _SEP + 0.35, "Generation: reverse diffusion in latent space (Stage 2), then one decode", "#7a2e0e"
    )
    z_text = "noisy latent $z_t$ (ch 0),\ndenoised step by step\nby the U-Net $\\epsilon_\\theta$"
    c.text(_LEFT - 0.2, yz + cell / 2, z_text, ha="right", va="center")
    x_text = "denoiser's guess of\nthe clean image,\ndecoded: $\\hat{x}_0$"
    c.text(_LEFT - 0.2, yx + cell / 2, x_text, ha="right", va="center")
    lim, x, mid = _abs_limit(noise, *(z for _, _, z in steps)), _LEFT, yz + cell / 2
    _show_latent(c.axes(x, yz, cell, cell), noise[0], lim)
    c.text(x + cell / 2, yz - 0.1, "start", ha="center", va="bottom", fontsize=10, weight="bold")
    c.caption(x + cell / 2, yz + cell + 0.08, "$z_T \\sim \\mathcal{N}(0, I)$")
    for label, x_hat, z_t in steps:
        nx = x + cell + gap
        c.arrow(x + cell + 0.05, mid, nx - 0.05, mid, "$\\epsilon_\\theta$")
        _show_latent(c.axes(nx, yz, cell, cell), z_t[0], lim)
        c.text(nx + cell / 2, yz - 0.1, str(label), ha="center", va="bottom", fontsize=10, weight="bold")
        c.line(
            nx + cell / 2, yz + cell + 0.05, nx + cell / 2, yx - 0.05, lw=1.2, color="#888888", linestyle="--"
        )
        _show_image(c.axes(nx, yx, cell, cell), x_hat)
        x = nx
    fx = x + cell + gap + 0.1
    c.line(x + cell + 0.05, mid, fx - 0.05, fy + final_size / 2)
    c.text((x + cell + fx) / 2, mid - 0.1, "$D_\\theta$", ha="center", va="bottom")
    ax = c.axes(fx, fy, final_size, final_size)
    _show_image(ax, final)
    for spine in ax.spines.values():
        spine.set_edgecolor("#2e7d32")
        spine.set_linewidth(2.5)
    c.caption(
        fx + final_size / 2,
        fy + final_size + 0.1,
        "new image\n$x_{\\mathrm{novel}} = D_\\theta(z_0)$",
        weight="bold",
    )


# ---------------------------------------------------------------- 3./4. curves and bars
