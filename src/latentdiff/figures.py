"""PNG figures people look at instead of numbers: sample grids, the two-stage data flow, curves, bars.

Every figure is a bare `matplotlib.figure.Figure` drawn by the Agg canvas and written through Pillow as an
RGB PNG: pyplot and its global backend are never touched, so nothing is left open and a notebook's own
backend keeps working. Images are float tensors in [-1, 1] (NCHW or CHW, 1 or 3 channels); latents are
float tensors with any channel count, drawn as heatmaps in a diverging colormap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from PIL import Image

from latentdiff.io.images import make_grid, to_uint8

DPI = 110
TEXT = "#222222"
LATENT_CMAP = "RdBu_r"
ERROR_CMAP = "inferno"
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


# ---------------------------------------------------------------- shared helpers


def _figure(width_in: float, height_in: float, layout: str | None = None, dpi: int = DPI) -> Figure:
    fig = Figure(figsize=(width_in, height_in), dpi=dpi, facecolor="white", layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _write_png(fig: Figure, path: str | Path) -> Path:
    """Render with Agg and save as RGB (the background is opaque white, so alpha carries nothing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    Image.fromarray(rgba[..., :3].copy(), mode="RGB").save(path)
    fig.clear()
    return path


def _check_images(name: str, x: object, ndim: int = 4) -> torch.Tensor:
    layout = "(N, C, H, W)" if ndim == 4 else "(C, H, W)"
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor {layout}, got {type(x).__name__}")
    if x.ndim != ndim or x.shape[-3] not in (1, 3):
        raise ValueError(f"{name} must have shape {layout} with 1 or 3 channels, got {tuple(x.shape)}")
    return x


def _check_latent(name: str, z: object) -> torch.Tensor:
    if not isinstance(z, torch.Tensor) or z.ndim != 3:
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(f"{name} must be a latent tensor (c, h, w), got {shape}")
    return z


def _pixels(image: torch.Tensor) -> np.ndarray:
    """CHW in [-1, 1] → HxWx3 uint8 (grey images repeated to RGB so every imshow is colour-exact)."""
    arr = to_uint8(image)
    return np.repeat(arr, 3, axis=-1) if arr.shape[-1] == 1 else arr


def _show_image(ax, image: torch.Tensor) -> None:
    ax.imshow(_pixels(image), interpolation="nearest")
    _bare(ax)


def _show_latent(ax, channel: torch.Tensor, limit: float):
    values = channel.detach().float().cpu().numpy()
    im = ax.imshow(values, cmap=LATENT_CMAP, vmin=-limit, vmax=limit, interpolation="nearest")
    _bare(ax)
    return im


def _bare(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor("#999999")


def _abs_limit(*tensors: torch.Tensor) -> float:
    """One symmetric colour limit shared by several latents (so equal colours mean equal values)."""
    return max(max(float(t.detach().abs().max()) for t in tensors), 1e-6)


def _fmt(v: float) -> str:
    a = abs(v)
    if float(v).is_integer() and a < 1e6:
        return f"{int(v):,}"
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1 or a == 0:
        return f"{v:.2f}"
    return f"{v:.3g}"


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB for images in [-1, 1] (peak-to-peak 2, so MAX² = 4)."""
    mse = float((a.detach().float().cpu() - b.detach().float().cpu()).pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(4 / mse)


def _psnr_text(p: float) -> str:
    return "PSNR ∞ (exact)" if math.isinf(p) else f"PSNR {p:.1f} dB"


# ---------------------------------------------------------------- 1. labelled sample grid


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


def _text_px(fig: Figure, s: str, **kw) -> float:
    """Rendered width of `s` in pixels (independent of the figure's size)."""
    probe = fig.text(0, 0, s, **kw)
    width = probe.get_window_extent(fig.canvas.get_renderer()).width
    probe.remove()
    return width


# ---------------------------------------------------------------- 2. the two-stage data flow


class _Canvas:
    """Places axes, text and arrows in inches measured from the figure's top-left corner."""

    def __init__(self, width: float, height: float) -> None:
        self.w, self.h = width, height
        self.fig = _figure(width, height)

    def axes(self, x: float, y: float, w: float, h: float):
        return self.fig.add_axes((x / self.w, 1 - (y + h) / self.h, w / self.w, h / self.h))

    def text(self, x: float, y: float, s: str, **kw) -> None:
        kw = {"color": TEXT, "fontsize": 11, **kw}
        self.fig.text(x / self.w, 1 - y / self.h, s, **kw)

    def caption(self, x: float, y: float, s: str, **kw) -> None:
        """Text centred on `x` hanging below `y`."""
        self.text(x, y, s, ha="center", va="top", **kw)

    def heading(self, y: float, s: str, color: str) -> None:
        self.text(0.3, y, s, fontsize=14, weight="bold", va="center", color=color)

    def line(self, x0: float, y0: float, x1: float, y1: float, style: str = "-|>", **kw) -> None:
        kw = {"mutation_scale": 16, "lw": 1.8, "color": "#333333", **kw}
        start, end = (x0, self.h - y0), (x1, self.h - y1)
        self.fig.add_artist(
            FancyArrowPatch(start, end, arrowstyle=style, transform=self.fig.dpi_scale_trans, **kw)
        )

    def arrow(self, x0: float, y0: float, x1: float, y1: float, label: str = "") -> None:
        self.line(x0, y0, x1, y1)
        if label:
            self.text((x0 + x1) / 2, min(y0, y1) - 0.08, label, ha="center", va="bottom")


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


def line_plot(
    path: str | Path,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    logx: bool = False,
    logy: bool = False,
    markers: bool = True,
    annotate_last: bool = False,
) -> Path:
    """Named curves `name → (xs, ys)` on one axes, with legend and grid."""
    if not series:
        raise ValueError("series must hold at least one named curve")
    curves = {}
    for name, pair in series.items():
        if len(pair) != 2:
            raise ValueError(f"series[{name!r}] must be a pair (xs, ys)")
        xs, ys = np.asarray(pair[0], dtype=float), np.asarray(pair[1], dtype=float)
        if xs.ndim != 1 or xs.shape != ys.shape or len(xs) == 0:
            raise ValueError(
                f"series[{name!r}]: xs and ys must be equal non-empty 1-D lists, "
                f"got {xs.shape} and {ys.shape}"
            )
        for axis, vals, log in (("x", xs, logx), ("y", ys, logy)):
            if log and np.any(vals[np.isfinite(vals)] <= 0):
                raise ValueError(f"series[{name!r}]: log{axis}=True needs positive {axis} values")
        curves[name] = (xs, ys)

    fig = _figure(7.5, 4.6, layout="constrained")
    ax = fig.add_subplot()
    for i, (name, (xs, ys)) in enumerate(curves.items()):
        marker = _MARKERS[i % len(_MARKERS)] if markers else None
        (line,) = ax.plot(xs, ys, marker=marker, markersize=5, lw=2, label=name)
        if annotate_last:
            kw = {"va": "center", "fontsize": 10, "color": line.get_color(), "weight": "bold"}
            ax.annotate(
                _fmt(float(ys[-1])), (xs[-1], ys[-1]), xytext=(6, 0), textcoords="offset points", **kw
            )
    if logx:
        _log_axis(ax.xaxis, ax.set_xscale, [xs for xs, _ in curves.values()])
    if logy:
        _log_axis(ax.yaxis, ax.set_yscale, [ys for _, ys in curves.values()])
    if annotate_last:
        ax.margins(x=0.12)
    ax.grid(True, which="major", alpha=0.35)
    if logx or logy:
        ax.grid(True, which="minor", alpha=0.12)
    ax.set_xlabel(xlabel, fontsize=12)
    ax.set_ylabel(ylabel, fontsize=12)
    ax.tick_params(labelsize=10)
    if title:
        ax.set_title(title, fontsize=14, weight="bold")
    ax.legend(fontsize=10, frameon=True, framealpha=0.9)
    return _write_png(fig, path)


def _log_axis(axis, set_scale, data: list[np.ndarray]) -> None:
    """Log scale; over a short range (≤ 3 decades) ticks at 1-2-5 with plain numbers instead of 10^n."""
    set_scale("log")
    vals = np.concatenate(data)
    vals = vals[np.isfinite(vals) & (vals > 0)]
    if len(vals) and vals.max() / vals.min() <= 1e3:
        axis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())


def bar_plot(
    path: str | Path,
    labels: Sequence[str],
    values: Mapping[str, Sequence[float]],
    *,
    ylabel: str,
    title: str | None = None,
    annotate: bool = True,
) -> Path:
    """Grouped bars: one group per label, one bar per `values` entry (e.g. ours vs diffusers)."""
    labels = [str(s) for s in labels]
    if not labels:
        raise ValueError("labels must name at least one group")
    if not values:
        raise ValueError("values must hold at least one named series")
    for name, vals in values.items():
        if len(vals) != len(labels):
            raise ValueError(f"values[{name!r}] has {len(vals)} numbers for {len(labels)} labels")

    fig = _figure(max(6.0, 1.3 + 1.1 * len(labels) * max(1, len(values)) ** 0.5), 4.6, layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(values)
    centres = np.arange(len(labels))
    for i, (name, vals) in enumerate(values.items()):
        heights = np.asarray(vals, dtype=float)
        bars = ax.bar(centres + (i - (len(values) - 1) / 2) * width, heights, width * 0.92, label=name)
        if annotate:
            ax.bar_label(bars, labels=[_fmt(v) for v in heights], padding=2, fontsize=9)
    ax.set_xticks(centres, labels, fontsize=11)
    ax.set_ylabel(ylabel, fontsize=12)
    ax.grid(True, axis="y", alpha=0.35)
    ax.set_axisbelow(True)
    if annotate:
        ax.margins(y=0.12)
    if title:
        ax.set_title(title, fontsize=14, weight="bold")
    ax.legend(fontsize=10)
    return _write_png(fig, path)


# ---------------------------------------------------------------- 5. reconstructions


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
