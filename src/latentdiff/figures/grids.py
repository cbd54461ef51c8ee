"""Image grids: samples with one labelled row per class, reconstructions with their error."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from latentdiff.figures.canvas import (
    DPI,
    ERROR_CMAP,
    TEXT,
    _bare,
    _Canvas,
    _check_images,
    _figure,
    _pixels,
    _psnr,
    _psnr_text,
    _show_image,
    _text_px,
    _write_png,
)
from latentdiff.io.images import make_grid


def class_grid(
    images: torch.Tensor,
    row_labels: Sequence[str],
    path: str | Path,
    *,
    cols: int | None = None,
    title: str | None = None,
    upscale: int | None = None,
) -> Path:
    """One row of samples per label (row r = images[r*cols:(r+1)*cols]), the label on the left.

    The grid is pasted pixel-exact (nearest-neighbour `upscale`, by default so that a cell is ~90 px).
    """
    images = _check_images("images", images)
    labels = [str(s) for s in row_labels]
    if not labels:
        raise ValueError("row_labels must name at least one row")
    rows, n = len(labels), len(images)
    if cols is None:
        if n == 0 or n % rows:
            raise ValueError(f"images: {n} images cannot be split into len(row_labels)={rows} equal rows")
        cols = n // rows
    elif cols <= 0 or cols * rows != n:
        raise ValueError(f"images: got {n} images, but cols={cols} × len(row_labels)={rows} = {cols * rows}")
    _, _, h, w = images.shape
    if upscale is None:
        upscale = max(1, math.ceil(90 / max(h, w)))
    elif upscale < 1:
        raise ValueError(f"upscale must be a positive integer, got {upscale}")

    cell = h * upscale
    pad = max(2, min(6, cell // 16))  # in screen pixels, so a large upscale does not widen the gaps
    big = images.detach().cpu().repeat_interleave(upscale, dim=-2).repeat_interleave(upscale, dim=-1)
    grid = _pixels(make_grid(big, nrow=cols, padding=pad, pad_value=1.0))
    row_px = cell + pad
    font = max(7.0, min(13.0, 0.55 * row_px * 72 / DPI))
    title_font = 15.0

    fig = _figure(1, 1)
    margin, gap = 12, 10
    title_px = int(title_font * DPI / 72 * 2.0) if title else 0
    grid_x = int(margin + max(_text_px(fig, s, fontsize=font) for s in labels) + gap)
    width = grid_x + grid.shape[1] + margin
    if title:
        width = max(width, int(_text_px(fig, title, fontsize=title_font, weight="bold")) + 2 * margin)
    height = (title_px or margin) + grid.shape[0] + margin
    fig.set_size_inches(width / DPI, height / DPI)
    fig.figimage(grid, xo=grid_x, yo=margin, origin="upper")
    top = margin + grid.shape[0]  # pixels from the bottom to the top edge of the grid
    for r, s in enumerate(labels):
        y = top - (pad + r * row_px + cell / 2)
        fig.text((grid_x - gap) / width, y / height, s, ha="right", va="center", fontsize=font, color=TEXT)
    if title:
        kw = {"ha": "center", "va": "center", "fontsize": title_font, "weight": "bold", "color": TEXT}
        fig.text(0.5, (height - title_px / 2) / height, title, **kw)
    return _write_png(fig, path)


def reconstruction_figure(
    path: str | Path,
    images: torch.Tensor,
    reconstructions: torch.Tensor,
    *,
    title: str | None = None,
    max_images: int = 8,
) -> Path:
    """Rows input | reconstruction (PSNR under each) | per-pixel |error| (channel mean, one colour scale)."""
    images = _check_images("images", images)
    reconstructions = _check_images("reconstructions", reconstructions)
    if images.shape != reconstructions.shape:
        raise ValueError(
            f"reconstructions {tuple(reconstructions.shape)} must match images {tuple(images.shape)}"
        )
    if len(images) == 0:
        raise ValueError("images must hold at least one image")
    if max_images < 1:
        raise ValueError(f"max_images must be at least 1, got {max_images}")
    # Clamped like the PNGs a person would compare.
    x = images[:max_images].detach().float().cpu().clamp(-1, 1)
    y = reconstructions[:max_images].detach().float().cpu().clamp(-1, 1)
    errors = (x - y).abs().mean(dim=1)
    vmax = max(float(errors.max()), 1e-3)
    psnrs = [_psnr(y[i], x[i]) for i in range(len(x))]
    finite = [p for p in psnrs if math.isfinite(p)]
    summary = f"mean {_psnr_text(sum(finite) / len(finite))}" if finite else "exact reconstructions"

    cell, gap, left, head = 1.3, 0.1, 2.0, 0.7
    row_y = (head, head + cell + 0.15, head + 2 * cell + 0.55)  # room for the PSNR under row 2
    c = _Canvas(left + len(x) * (cell + gap) + 0.8, row_y[2] + cell + 0.25)
    heading = {"fontsize": 14, "weight": "bold"} if title else {"fontsize": 12}
    c.text(c.w / 2, 0.35, f"{title}  ({summary})" if title else summary, ha="center", va="center", **heading)
    im = None
    for i in range(len(x)):
        px = left + i * (cell + gap)
        _show_image(c.axes(px, row_y[0], cell, cell), x[i])
        _show_image(c.axes(px, row_y[1], cell, cell), y[i])
        c.caption(
            px + cell / 2, row_y[1] + cell + 0.06, _psnr_text(psnrs[i]).removeprefix("PSNR "), fontsize=10
        )
        ax = c.axes(px, row_y[2], cell, cell)
        im = ax.imshow(errors[i].numpy(), cmap=ERROR_CMAP, vmin=0, vmax=vmax, interpolation="nearest")
        _bare(ax)
    names = (
        "input $x$",
        "reconstruction\n$D(E(x))$",
        "|error|" + ("\n(channel mean)" if x.shape[1] > 1 else ""),
    )
    for y_top, text in zip(row_y, names, strict=True):
        c.text(left - 0.15, y_top + cell / 2, text, ha="right", va="center", fontsize=11)
    bar = c.fig.colorbar(im, cax=c.axes(left + len(x) * (cell + gap), row_y[2], 0.12, cell))
    bar.ax.tick_params(labelsize=8)
    return _write_png(c.fig, path)
