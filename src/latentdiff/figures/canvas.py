"""Drawing helpers shared by the figures: figures and canvases, PNG writing, input checks, panels."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch
from PIL import Image

from latentdiff.io.images import to_uint8

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
