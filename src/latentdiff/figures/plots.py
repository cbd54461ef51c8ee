"""Line and bar plots (curves against steps, time or NFE; grouped throughput bars)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from latentdiff.figures.canvas import (
    _MARKERS,
    _figure,
    _fmt,
    _write_png,
)


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
