"""PNG figures people look at instead of numbers: sample grids, the two-stage data flow, curves, bars.

Every figure is a bare `matplotlib.figure.Figure` drawn by the Agg canvas and written through Pillow as an
RGB PNG: pyplot and its global backend are never touched, so nothing is left open and a notebook's own
backend keeps working. Images are float tensors in [-1, 1] (NCHW or CHW, 1 or 3 channels); latents are
float tensors with any channel count, drawn as heatmaps in a diverging colormap.
"""

from latentdiff.figures.flow import how_it_works
from latentdiff.figures.grids import class_grid, reconstruction_figure
from latentdiff.figures.plots import bar_plot, line_plot

__all__ = ["bar_plot", "class_grid", "how_it_works", "line_plot", "reconstruction_figure"]
