"""Lab 1's figures (gradient descent vs SGD and batch size), for studies that record the
linear model's (w, b) after each update (record_updates):

- loss_curves: the training loss vs epoch and vs number of updates, one line per batch size;
- trajectories: each batch size's (w, b) path, update by update from w = b = 0, over the
  contours of the full training data's mean squared error, the least-squares optimum marked.

    python -m analysis.lab1_figures results/<study>/runs.csv results/<study>/epochs.csv \\
        results/<study>/updates.csv --out results/<study>/figures

The loss surface is computed here, with numpy, from the same seeded points the cells
trained on (jobs/plan/datasets.py: linear_splits).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis import LAB1_FIGURE_NAMES
from analysis.figures import (
    BATCH_AXIS,
    REFERENCE_COLOR,
    FigureOutcome,
    batch_legend,
    batch_palette,
    figure_style,
    figure_title,
    note_empty,
    plain_log_scale,
    save_figures,
)
from analysis.tables import finished
from jobs.plan.datasets import LINEAR_NUM_POINTS, linear_splits

W_RANGE, B_RANGE = (0.0, 20.0), (-18.0, 22.0)  # the course's window over the loss surface
MAX_POINTS_PER_PATH = 20_000  # a batch-1 run has up to 100,000 updates: thin the drawn path, keep its ends


def least_squares(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(w, b) minimising the mean squared error of y = w x + b."""
    design = np.column_stack([x, np.ones_like(x)])
    (w, b), *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(w), float(b)


def loss_surface(x: np.ndarray, y: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean squared error of w x + b over the points, at every (w, b) of the meshes."""
    residual = w[..., None] * x + b[..., None] - y
    return np.mean(residual**2, axis=-1)


def plotted(runs: pd.DataFrame) -> pd.DataFrame:
    return finished(runs)


def loss_curves_figure(runs: pd.DataFrame, epochs: pd.DataFrame) -> Figure:
    figure = Figure(figsize=(12.0, 5.4), layout="constrained")
    by_epoch, by_update = figure.subplots(1, 2, sharey=True)
    cells = plotted(runs)
    palette = batch_palette(cells[BATCH_AXIS].astype(int))
    shown = epochs[epochs["cell"].isin(cells["cell"])]
    if shown.empty:
        for ax in (by_epoch, by_update):
            note_empty(ax, "no finished cells to plot")
    drawn = {by_epoch: False, by_update: False}
    for _, curve in shown.groupby("cell", sort=False):
        batch = int(curve[BATCH_AXIS].iloc[0])
        updates = curve["steps"].cumsum()
        for ax, x in ((by_epoch, curve["epoch"]), (by_update, updates)):
            # Log axes: a point without a loss or a count of updates (a damaged record) is left out.
            positive = ((curve["train_loss"] > 0) & (x > 0)).to_numpy()
            ax.plot(x.to_numpy()[positive], curve["train_loss"].to_numpy()[positive], color=palette[batch], lw=1.8)
            drawn[ax] = drawn[ax] or bool(positive.any())
    for ax, has_points in drawn.items():
        if has_points:
            plain_log_scale(ax, "y")
            plain_log_scale(ax, "x")
        elif not shown.empty:
            note_empty(ax, "no finished cell recorded a training loss and its updates")
    by_epoch.set_xlabel("Epoch (passes over the training data)")
    by_update.set_xlabel("Updates (optimizer steps)")
    by_epoch.set_ylabel("Training loss (MSE, mean over the epoch)")
    figure_title(figure, "Training loss vs epochs and vs updates, one line per batch size",
           "per epoch, small batches get further (more updates per pass);\n"
           "per update, large batches do (less gradient noise): the trade-off batch size sets")
    batch_legend(figure, palette, runs)
    return figure


def trajectories_figure(runs: pd.DataFrame, updates: pd.DataFrame, seed: int, num_train: int) -> Figure:
    (x, y), _ = linear_splits(seed, num_train)
    w_optimum, b_optimum = least_squares(x, y)
    w_grid, b_grid = np.meshgrid(np.linspace(*W_RANGE, 201), np.linspace(*B_RANGE, 201))
    surface = loss_surface(x, y, w_grid, b_grid)

    figure = Figure(figsize=(8.0, 7.0), layout="constrained")
    ax = figure.subplots()
    levels = np.geomspace(surface.min() * 1.02, surface.max(), 14)
    contours = ax.contour(w_grid, b_grid, surface, levels=levels, colors=REFERENCE_COLOR, linewidths=0.7)
    ax.clabel(contours, fmt="%.0f", fontsize="x-small")
    cells = plotted(runs)
    palette = batch_palette(cells[BATCH_AXIS].astype(int))
    for _, path in updates[updates["cell"].isin(cells["cell"])].groupby("cell", sort=False):
        batch = int(path[BATCH_AXIS].iloc[0])
        w = np.concatenate([[0.0], path["weight"].to_numpy()])  # every run starts at w = b = 0
        b = np.concatenate([[0.0], path["bias"].to_numpy()])
        if len(w) > MAX_POINTS_PER_PATH:
            keep = np.unique(np.linspace(0, len(w) - 1, MAX_POINTS_PER_PATH).astype(int))
            w, b = w[keep], b[keep]
        ax.plot(w, b, color=palette[batch], lw=1.2, alpha=0.85)
        ax.plot(w[-1:], b[-1:], "o", color=palette[batch], ms=6)
    ax.plot([w_optimum], [b_optimum], marker="*", color="black", ms=16, ls="none")
    ax.set_xlim(*W_RANGE)
    ax.set_ylim(*B_RANGE)
    ax.set_xlabel("Weight w (slope)")
    ax.set_ylabel("Bias b (intercept)")
    ax.legend(handles=[
        Line2D([], [], marker="*", color="black", ms=12, ls="none",
               label=f"least-squares optimum (w = {w_optimum:.2f}, b = {b_optimum:.2f})"),
        Line2D([], [], color=REFERENCE_COLOR, lw=0.7, label="contours of the loss (mean squared error)"),
        Line2D([], [], marker="o", color=REFERENCE_COLOR, ls="none", label="where each run stopped"),
    ], loc="upper right", fontsize="small")
    figure_title(figure, "Paths of (w, b), update by update, from w = b = 0",
           "the full batch (gradient descent) moves smoothly down the loss surface;\n"
           "small batches zigzag and hover around the optimum, by gradient noise")
    batch_legend(figure, palette, runs)
    return figure


def lab1_figures(runs: pd.DataFrame, epochs: pd.DataFrame, updates: pd.DataFrame) -> dict[str, Figure]:
    """Lab 1's figures, built (call within figure_style)."""
    params = plotted(runs)
    seed = int(params["seed"].iloc[0]) if "seed" in params and len(params) else 0
    num_train = (int(params["train_subset"].iloc[0])
                 if "train_subset" in params and len(params) and pd.notna(params["train_subset"].iloc[0])
                 else LINEAR_NUM_POINTS)
    figures = {"loss_curves": loss_curves_figure(runs, epochs),
               "trajectories": trajectories_figure(runs, updates, seed, num_train)}
    assert tuple(figures) == LAB1_FIGURE_NAMES
    return figures


def make_lab1_figures(runs: pd.DataFrame, epochs: pd.DataFrame, updates: pd.DataFrame,
                      out_dir: Path) -> list[FigureOutcome]:
    with figure_style():
        return save_figures(lab1_figures(runs, epochs, updates), Path(out_dir))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Draw Lab 1's figures from runs.csv, epochs.csv and updates.csv.")
    parser.add_argument("runs_csv", type=Path)
    parser.add_argument("epochs_csv", type=Path)
    parser.add_argument("updates_csv", type=Path)
    parser.add_argument("--out", type=Path, help="output directory (default: figures/ beside runs.csv)")
    args = parser.parse_args(argv)
    runs, epochs, updates = (pd.read_csv(path) for path in (args.runs_csv, args.epochs_csv, args.updates_csv))
    for path in make_lab1_figures(runs, epochs, updates, args.out or args.runs_csv.parent / "figures"):
        print(path)


if __name__ == "__main__":
    main()
