"""The PNG figures: pixel placement, labels, layout order, input validation, no open figures."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from latentdiff import figures  # noqa: E402
from latentdiff.data.fashion_mnist import CLASS_NAMES as FASHION  # noqa: E402

C0 = (31, 119, 180)  # matplotlib's first cycle colour, the first series


@pytest.fixture(autouse=True)
def no_open_figures():
    yield
    assert plt.get_fignums() == []


def _open(path) -> np.ndarray:
    img = Image.open(path)
    assert img.mode == "RGB"
    assert path.stat().st_size < 2 * 1024 * 1024
    return np.asarray(img).astype(int)


def _runs(values: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of the runs of True."""
    padded = np.concatenate([[False], values, [False]]).astype(int)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2], edges[1::2], strict=True))


def _rows_of_grey(levels: list[float], cols: int, size: int) -> torch.Tensor:
    return torch.cat([torch.full((cols, 1, size, size), v) for v in levels])


def test_class_grid_puts_rows_in_order_pixel_exact_with_labels_on_the_left(tmp_path):
    levels = [-0.8 + 1.6 * r / 9 for r in range(10)]
    labels = FASHION[:-1] + ["Ankle boot, a 30 character name"]
    path = figures.class_grid(_rows_of_grey(levels, 8, 32), labels, tmp_path / "deep" / "samples.png")
    assert path == tmp_path / "deep" / "samples.png"
    px = _open(path)
    h, w, _ = px.shape
    assert 10 * 32 * 2 <= h <= 2000 and 8 * 32 * 2 <= w <= 2000  # upscaled so pixels are visible
    assert (px[..., 0] == px[..., 1]).all() and (px[..., 1] == px[..., 2]).all()  # grey stays grey

    expected = [round((v + 1) * 127.5) for v in levels]
    # The rightmost column of cells: a vertical line through its middle meets the 10 rows top to bottom.
    cell_runs = _runs((px[:, :, 0] < 250).any(axis=0))
    right, cell_w = cell_runs[-1][1] - 1, cell_runs[-1][1] - cell_runs[-1][0]
    assert cell_w >= 64
    x_mid = right - cell_w // 2
    runs = _runs(px[:, x_mid, 0] < 250)
    assert len(runs) == 10
    heights = [b - a for a, b in runs]
    assert max(heights) == min(heights) == cell_w  # square cells, equal rows
    centre_values = [px[(a + b) // 2, x_mid, 0] for a, b in runs]
    assert centre_values == expected  # pixel-exact, rows in the given order

    # Each row holds 8 cells of its grey; left of them, its label: dark text pixels within the row's height.
    for (a, b), value in zip(runs, expected, strict=True):
        cells = [r for r in _runs(px[(a + b) // 2, :, 0] == value) if r[1] - r[0] == cell_w]
        assert len(cells) == 8
        grid_left = cells[0][0]
        label_area = px[a:b, :grid_left, 0]
        assert label_area.min() < 90
    # The 30-character label fits: its first dark pixel is inside the figure, not cut at the left edge.
    last = px[runs[-1][0] : runs[-1][1], :grid_left, 0]
    assert (last < 128).any(axis=0).argmax() > 2


def test_class_grid_rgb_title_and_explicit_cols(tmp_path):
    colours = torch.tensor([[1.0, -1, -1], [-1, 1, -1], [-1, -1, 1]])
    images = torch.cat([c.view(1, 3, 1, 1).expand(4, 3, 8, 8) for c in colours])
    px = _open(figures.class_grid(images, ["red", "green", "blue"], tmp_path / "g.png", cols=4, title="RGB"))
    for colour in ([255, 0, 0], [0, 255, 0], [0, 0, 255]):
        count = (px == colour).all(axis=-1).sum()
        assert count >= 4 * 8 * 8 * 9  # four 8×8 cells per row, each upscaled at least 3×
    red_rows = np.flatnonzero((px == [255, 0, 0]).all(axis=-1).any(axis=1))
    blue_rows = np.flatnonzero((px == [0, 0, 255]).all(axis=-1).any(axis=1))
    assert red_rows.max() < blue_rows.min()
    title_band = px[: red_rows.min()]
    assert (title_band[..., 0] < 90).any()  # the title is drawn above the grid


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"images": torch.zeros(7, 1, 8, 8), "row_labels": ["a", "b"]}, "images"),
        ({"images": torch.zeros(8, 1, 8, 8), "row_labels": ["a", "b"], "cols": 3}, "cols"),
        ({"images": torch.zeros(8, 2, 8, 8), "row_labels": ["a", "b"]}, "images"),
        ({"images": torch.zeros(8, 8, 8), "row_labels": ["a", "b"]}, "images"),
        ({"images": torch.zeros(8, 1, 8, 8), "row_labels": []}, "row_labels"),
    ],
)
def test_class_grid_rejects_bad_input_naming_the_argument(tmp_path, kwargs, names):
    with pytest.raises(ValueError, match=names):
        figures.class_grid(path=tmp_path / "x.png", **kwargs)


def _flow_inputs(steps: int = 4) -> dict:
    def solid(rgb):
        return torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1).expand(3, 32, 32).clone()

    red, green, blue = solid([1, -1, -1]), solid([-1, 1, -1]), solid([-1, -1, 1])
    g = torch.Generator().manual_seed(0)
    return {
        "image": red,
        "latent": torch.randn(4, 8, 8, generator=g),
        "reconstruction": red,
        "noise": torch.randn(4, 8, 8, generator=g),
        "trajectory": [
            (f"step {5 * (i + 1)}/20", blue, torch.randn(4, 8, 8, generator=g)) for i in range(steps)
        ],
        "final": green,
        "info": {"d": 3 * 32 * 32, "k": 256, "f": 4, "psnr": 29.1, "sampler": "ddim"},
    }


def _mask(px: np.ndarray, rgb) -> np.ndarray:
    return (px == rgb).all(axis=-1)


def test_how_it_works_puts_compression_on_top_and_generation_below(tmp_path):
    px = _open(figures.how_it_works(tmp_path / "how.png", **_flow_inputs(steps=4)))
    h, w, _ = px.shape
    assert 1000 <= w <= 2600 and 600 <= h <= 1400
    red, green, blue = _mask(px, [255, 0, 0]), _mask(px, [0, 255, 0]), _mask(px, [0, 0, 255])
    # Stage 1: x0 and D(z0) (red) side by side in the top half.
    red_rows, red_cols = np.flatnonzero(red.any(axis=1)), _runs(red.any(axis=0))
    assert red_rows.max() < h / 2 and len(red_cols) == 2
    # Generation: one decoded x̂0 (blue) per trajectory entry, left to right, below; x_novel (green) last.
    blue_cols = _runs(blue.any(axis=0))
    assert len(blue_cols) == 4 and np.flatnonzero(blue.any(axis=1)).min() > h / 2
    green_cols = np.flatnonzero(green.any(axis=0))
    assert green_cols.min() > blue_cols[-1][1]
    # x_novel is drawn larger than each intermediate prediction.
    assert green.sum() > 1.5 * blue.sum() / 4
    # Latent heatmaps use a diverging map: both blue-ish (negative) and red-ish (positive) cells appear.
    r, b = px[..., 0], px[..., 2]
    assert ((r - b > 60) & ~red).sum() > 500 and ((b - r > 60) & ~blue).sum() > 500


def test_how_it_works_handles_many_channels_long_and_empty_trajectories(tmp_path):
    inputs = _flow_inputs(steps=10)
    inputs["latent"], inputs["noise"] = torch.randn(16, 8, 8), torch.randn(16, 8, 8)
    inputs["trajectory"] = [(s, x, torch.randn(16, 8, 8)) for s, x, _ in inputs["trajectory"]]
    inputs["info"] = {}  # d, k, f and PSNR derived from the tensors
    px = _open(figures.how_it_works(tmp_path / "long.png", **inputs))
    assert len(_runs(_mask(px, [0, 0, 255]).any(axis=0))) == 10
    assert _mask(px[:, -5:], [255, 255, 255]).all()  # nothing runs off the right edge
    inputs["trajectory"] = []
    px = _open(figures.how_it_works(tmp_path / "empty.png", **inputs))
    assert _mask(px, [0, 255, 0]).any() and not _mask(px, [0, 0, 255]).any()


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"reconstruction": torch.zeros(3, 16, 16)}, "reconstruction"),
        ({"final": torch.zeros(1, 32, 32)}, "final"),
        ({"noise": torch.zeros(4, 4, 4)}, "noise"),
        ({"latent": torch.zeros(4, 8)}, "latent"),
        ({"image": torch.zeros(2, 32, 32)}, "image"),
        ({"info": {"d": 1024}}, "info"),
        ({"trajectory": [("a", torch.zeros(3, 32, 32), torch.zeros(4, 4, 4))]}, r"trajectory\[0\]"),
        ({"trajectory": [("a", torch.zeros(3, 32, 32))]}, r"trajectory\[0\]"),
    ],
)
def test_how_it_works_rejects_bad_input_naming_the_argument(tmp_path, change, names):
    with pytest.raises(ValueError, match=names):
        figures.how_it_works(tmp_path / "x.png", **{**_flow_inputs(), **change})


def _longest_vertical_run(mask_column: np.ndarray) -> int:
    return max((b - a for a, b in _runs(mask_column)), default=0)


def test_bar_plot_bar_heights_are_proportional_to_values(tmp_path):
    path = figures.bar_plot(
        tmp_path / "bars.png",
        ["train", "sample fp32", "sample bf16"],
        {"ours": [100.0, 200.0, 400.0], "diffusers": [90.0, 180.0, 300.0]},
        ylabel="images / s",
        title="throughput",
    )
    px = _open(path)
    first = _mask(px, C0)
    heights = np.array([_longest_vertical_run(first[:, x]) for x in range(px.shape[1])])
    bars = [(a, b) for a, b in _runs(heights > 20) if b - a > 10]  # wide runs of tall columns: the bars
    assert len(bars) == 3
    tall = [int(np.median(heights[a:b])) for a, b in bars]
    assert tall[1] / tall[0] == pytest.approx(2, rel=0.03) and tall[2] / tall[0] == pytest.approx(4, rel=0.03)


def test_bar_plot_rejects_values_not_matching_labels(tmp_path):
    with pytest.raises(ValueError, match="values\\['ours'\\]"):
        figures.bar_plot(tmp_path / "x.png", ["a", "b"], {"ours": [1.0]}, ylabel="y")
    with pytest.raises(ValueError, match="labels"):
        figures.bar_plot(tmp_path / "x.png", [], {"ours": []}, ylabel="y")


def test_line_plot_draws_each_series_and_checks_log_axes(tmp_path):
    path = figures.line_plot(
        tmp_path / "lines.png",
        {"pixel": ([1, 2, 4, 8], [120, 80, 50, 35]), "latent f=4": ([0.5, 1, 2, 4], [100, 60, 40, 28])},
        xlabel="training minutes",
        ylabel="FID",
        title="FID vs time",
        logx=True,
        annotate_last=True,
    )
    px = _open(path)
    assert 600 <= px.shape[1] <= 1400 and 400 <= px.shape[0] <= 1000
    c1 = (255, 127, 14)  # second series
    assert _mask(px, C0).sum() > 300 and _mask(px, c1).sum() > 300
    # `pixel` falls from left to right: its top-most drawn pixel is left of its bottom-most one.
    ys, xs = np.nonzero(_mask(px, C0)[:, : int(px.shape[1] * 0.8)])  # leave the legend (top right) out
    assert xs[ys.argmin()] < xs[ys.argmax()]
    with pytest.raises(ValueError, match="logx"):
        figures.line_plot(tmp_path / "x.png", {"a": ([0, 1], [1, 2])}, xlabel="x", ylabel="y", logx=True)
    with pytest.raises(ValueError, match="series\\['a'\\]"):
        figures.line_plot(tmp_path / "x.png", {"a": ([1, 2, 3], [1, 2])}, xlabel="x", ylabel="y")


def test_reconstruction_figure_rows_and_error_map(tmp_path):
    red = torch.tensor([1.0, -1, -1]).view(1, 3, 1, 1).expand(3, 3, 16, 16).clone()
    recon = red.clone()
    recon[1, :, :, :8] = torch.tensor([-1.0, -1, 1]).view(3, 1, 1)  # left half of image 1 turned blue
    px = _open(figures.reconstruction_figure(tmp_path / "rec.png", red, recon, title="KL f=4"))
    red_mask, blue_mask = _mask(px, [255, 0, 0]), _mask(px, [0, 0, 255])
    assert len(_runs(red_mask.any(axis=1))) == 2  # input row above reconstruction row
    blue_rows = np.flatnonzero(blue_mask.any(axis=1))
    red_runs = _runs(red_mask.any(axis=1))
    assert red_runs[1][0] <= blue_rows.min() and blue_rows.max() < red_runs[1][1]
    # |error| row: exact pixels at the bottom of the colour map, the changed half at its top (shared scale).
    hot = (np.abs(px - [252, 255, 164]) <= 2).all(axis=-1)  # inferno(1.0)
    cold = (np.abs(px - [0, 0, 4]) <= 2).all(axis=-1)  # inferno(0.0)
    assert hot.any() and np.flatnonzero(hot.any(axis=1)).min() > red_runs[1][1]
    assert 3 < cold.sum() / max(hot.sum(), 1) < 7  # five zero-error halves per changed half, give or take


def test_reconstruction_figure_limits_images_and_validates(tmp_path):
    images = torch.rand(20, 1, 8, 8) * 2 - 1
    few = _open(figures.reconstruction_figure(tmp_path / "a.png", images, images, max_images=4))
    many = _open(figures.reconstruction_figure(tmp_path / "b.png", images, images))
    assert few.shape[1] < many.shape[1]
    with pytest.raises(ValueError, match="reconstructions"):
        figures.reconstruction_figure(tmp_path / "c.png", images, images[:, :, :4])
    with pytest.raises(ValueError, match="max_images"):
        figures.reconstruction_figure(tmp_path / "c.png", images, images, max_images=0)
