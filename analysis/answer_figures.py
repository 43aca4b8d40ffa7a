"""The figures of the study's answer (analysis/answer.py), one panel per group of cells,
and the command that writes the answer and draws them (`python -m analysis.answer_figures`):

- noise_scale: the gradient noise scale B_simple per epoch of each cell of 2+ workers,
  beside the critical batch fitted from steps to target;
- steps_to_target: steps to target vs global batch (log-log) with the fitted
  (S/S_min - 1)(E/E_min - 1) = 1 curve and its three regimes;
- tta_decomposition: time to target = steps to target x time per step, each vs global batch;
- pareto: time to target vs its cost (money where the panel's partition is priced, else GPU-hours),
  measured and predicted configurations, the front;
- holdout: predicted vs measured time per step of the largest worker count, fitted without it.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from analysis.answer import GroupAnswer, StudyAnswer, answer_markdown, workers_text, write_answer
from analysis.critical_batch import REGIME_FACTOR
from analysis.figures import (
    REFERENCE_COLOR,
    WORKER_MARKERS,
    FigureOutcome,
    category_bars,
    figure_style,
    figure_title,
    new_figure,
    note,
    note_empty,
    plain_log_scale,
    save_figures,
)
from analysis.scaling_model import Choice, in_money, pareto_front

GLOBAL_BATCH_LABEL = "Global batch size (samples per step, all workers)"
GPU_HOURS_LABEL = "GPU-hours to target (workers x training time, h)"
COST_LABEL = "Cost to target (GPU-hours x the partition's price per GPU-hour, launcher.partitions)"
TIME_TO_TARGET_LABEL = "Time to target (s of training)"
REGIME_COLORS = {"perfect scaling": "#d9f0d3", "diminishing returns": "#fff7bc", "no further gain": "#fde0dd"}


def answer_figures(answer: StudyAnswer, epochs: pd.DataFrame, runs: pd.DataFrame) -> dict[str, Figure]:
    """The answer's figures, built (call within figure_style)."""
    groups = answer.groups or [GroupAnswer({}, 0, None, None, None, "no cells", pd.DataFrame(), pd.DataFrame(),
                                           None)]
    return {
        "noise_scale": noise_scale_figure(groups, epochs, runs),
        "steps_to_target": steps_to_target_figure(groups, runs, answer.target),
        "tta_decomposition": tta_decomposition_figure(groups, runs, answer.target),
        "pareto": pareto_figure(groups, answer),
        "holdout": holdout_figure(groups),
    }


def make_answer_figures(answer: StudyAnswer, epochs: pd.DataFrame, runs: pd.DataFrame,
                        out_dir: Path) -> list[FigureOutcome]:
    with figure_style():
        return save_figures(answer_figures(answer, epochs, runs), Path(out_dir))


def group_label(group: GroupAnswer) -> str:
    return ", ".join(f"{axis}={value}" for axis, value in group.group.items())


def group_cells(runs: pd.DataFrame, group: GroupAnswer) -> pd.DataFrame:
    cells = runs[runs["status"].isin(("complete", "diverged"))]
    for axis, value in group.group.items():
        cells = cells[cells[axis].astype(str) == str(value)]
    cells = cells.copy()
    for column in ("global_batch", "world_size", "steps_to_target", "time_per_step_s", "time_to_target_s"):
        cells[column] = pd.to_numeric(cells.get(column), errors="coerce")
    return cells


def batch_axis(ax: Axes) -> None:
    """Batch sizes on a base-2 log axis, labelled 16, 32, ... rather than 2^4, 2^5."""
    plain_log_scale(ax, "x", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))


def worker_marker(workers: float) -> str:
    return WORKER_MARKERS[int(math.log2(max(workers, 1))) % len(WORKER_MARKERS)]


def worker_handles(workers: list[int]) -> list[Line2D]:
    return [Line2D([], [], ls="none", marker=worker_marker(n), color="0.2", label=workers_text(n))
            for n in sorted(set(workers))]


def _titled_panels(groups: list[GroupAnswer]) -> tuple[Figure, list[Axes]]:
    figure, axes = new_figure(len(groups))
    for ax, group in zip(axes, groups):
        if group.group:
            ax.set_title(group_label(group), fontsize="medium")
    return figure, axes


def noise_scale_figure(groups: list[GroupAnswer], epochs: pd.DataFrame, runs: pd.DataFrame) -> Figure:
    figure, axes = _titled_panels(groups)
    for ax, group in zip(axes, groups):
        cells = group_cells(runs, group)
        measured = epochs[epochs["cell"].isin(cells["cell"])].copy() if "noise_scale" in epochs.columns \
            else pd.DataFrame()
        if len(measured):
            measured["noise_scale"] = pd.to_numeric(measured["noise_scale"], errors="coerce")
            measured = measured.dropna(subset=["noise_scale"])
            measured = measured[measured["noise_scale"] > 0]
        ax.set_xlabel("Epoch")
        ax.set_ylabel("Gradient noise scale B_simple (samples)")
        if measured.empty:
            note_empty(ax, "no cell of 2+ workers measured B_simple")
            continue
        # One curve per global batch and worker count: with repeats, the median over them at each epoch.
        measured = measured[["cell", "epoch", "noise_scale"]].merge(cells[["cell", "global_batch", "world_size"]],
                                                                     on="cell")
        curves = measured.groupby(["global_batch", "world_size", "epoch"])["noise_scale"].median().reset_index()
        batches = sorted(curves["global_batch"].unique())
        palette = dict(zip(batches, sns.color_palette("viridis", len(batches))))
        for (batch, workers), rows in curves.groupby(["global_batch", "world_size"]):
            ax.plot(rows["epoch"], rows["noise_scale"], marker=worker_marker(workers), color=palette[batch],
                    label=f"global batch {batch:g}, {workers:g} workers")
        plain_log_scale(ax, "y")
        crit = group.critical_batch
        if crit is not None and math.isfinite(crit.critical_batch):
            low, high = crit.critical_batch_interval
            ax.axhline(crit.critical_batch, color=REFERENCE_COLOR, ls="--", label=f"B_crit fit {crit.critical_batch:.3g}")
            if math.isfinite(low) and math.isfinite(high):
                ax.axhspan(low, high, color=REFERENCE_COLOR, alpha=0.12)
        ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    figure_title(figure, "Gradient noise scale B_simple over training",
           "Each epoch's B_simple = tr(Sigma)/|G|^2 from the workers' local and averaged gradients (McCandlish et al. "
           "2018), one curve per global batch and worker count (with repeats, their median); dashed: the critical batch fitted from steps to target, band: its 95 % interval. A batch well "
           "below B_simple scales almost perfectly; far above it, extra samples per step are wasted.")
    return figure


def steps_to_target_figure(groups: list[GroupAnswer], runs: pd.DataFrame, target: str) -> Figure:
    figure, axes = _titled_panels(groups)
    for ax, group in zip(axes, groups):
        cells = group_cells(runs, group).dropna(subset=["steps_to_target", "global_batch"])
        ax.set_xlabel(GLOBAL_BATCH_LABEL)
        ax.set_ylabel("Steps to target (optimizer updates)")
        if cells.empty:
            note_empty(ax, "no cell reached the target")
            continue
        if cells["global_batch"].nunique() == 1 and group.critical_batch is None:
            note_empty(ax, "one global batch reached the target: no curve to draw or fit "
                           "(tta_decomposition compares the steps)")
            continue
        for workers, rows in cells.groupby("world_size"):
            ax.scatter(rows["global_batch"], rows["steps_to_target"], marker=worker_marker(workers), s=60,
                       color="C0", zorder=4, edgecolor="black")
        batch_axis(ax)
        plain_log_scale(ax, "y")
        handles: list[Line2D | Patch] = list(worker_handles([int(n) for n in cells["world_size"]]))
        crit = group.critical_batch
        if crit is not None:
            low_b, high_b = cells["global_batch"].min() / 4, cells["global_batch"].max() * 4
            batch = np.geomspace(low_b, high_b, 200)
            ax.plot(batch, crit.steps(batch), color="C3", lw=2)
            ax.plot(batch, crit.steps_min * crit.critical_batch / batch, color=REFERENCE_COLOR, ls=":")
            ax.axhline(crit.steps_min, color=REFERENCE_COLOR, ls="--")
            b_crit = crit.critical_batch
            regions = {"perfect scaling": (low_b, b_crit / REGIME_FACTOR),
                       "diminishing returns": (b_crit / REGIME_FACTOR, b_crit * REGIME_FACTOR),
                       "no further gain": (b_crit * REGIME_FACTOR, high_b)}
            for name, (start, end) in regions.items():
                if end > start:
                    ax.axvspan(max(start, low_b), min(end, high_b), color=REGIME_COLORS[name], zorder=0)
            ax.set_xlim(low_b, high_b)
            handles += [Line2D([], [], color="C3", lw=2, label=f"fit: B_crit {b_crit:.3g}, S_min {crit.steps_min:.3g}"),
                        Line2D([], [], color=REFERENCE_COLOR, ls=":", label="perfect scaling (S ~ 1/B)"),
                        Line2D([], [], color=REFERENCE_COLOR, ls="--", label="S_min (no further gain)")]
            handles += [Patch(color=color, label=name) for name, color in REGIME_COLORS.items()]
        else:
            note(ax, "too few cells for the fit (it needs 3+ global batch sizes)")
        if group.noise_scale is not None:
            ax.axvline(group.noise_scale, color="C2", ls="-.")
            handles.append(Line2D([], [], color="C2", ls="-.", label=f"B_simple {group.noise_scale:.3g}"))
        ax.legend(handles=handles, fontsize="x-small", loc="best")
    figure_title(figure, f"Steps to target ({target}) vs global batch",
           "Points: cells (marker: workers); red: the fit of (S/S_min - 1)(E/E_min - 1) = 1, B_crit = E_min/S_min; "
           "shading: perfect scaling (B < B_crit/4), diminishing returns, no further gain (B > 4 B_crit) "
           "(Shallue et al. 2018).")
    return figure


def tta_decomposition_figure(groups: list[GroupAnswer], runs: pd.DataFrame, target: str) -> Figure:
    reached = [group_cells(runs, group).dropna(subset=["steps_to_target", "time_per_step_s"]) for group in groups]
    if len(groups) > 1 and all(len(cells) <= 1 for cells in reached) and any(len(cells) for cells in reached):
        return tta_decomposition_by_group(groups, reached, target)
    figure = Figure(figsize=(15, 4.2 * len(groups) + 1.6), layout="constrained")
    grid = figure.subplots(len(groups), 3, squeeze=False)
    parts = (("steps_to_target", "Steps to target (updates)", "statistical efficiency"),
             ("time_per_step_s", "Time per step (s)", "hardware efficiency"),
             ("time_to_target_s", TIME_TO_TARGET_LABEL, "= steps x time per step"))
    for row, group in zip(grid, groups):
        cells = group_cells(runs, group).dropna(subset=["steps_to_target", "time_per_step_s"])
        for ax, (column, label, meaning) in zip(row, parts):
            ax.set_xlabel(GLOBAL_BATCH_LABEL)
            ax.set_ylabel(label)
            ax.set_title(f"{meaning}{' - ' + group_label(group) if group.group else ''}", fontsize="medium")
            if cells.empty:
                note_empty(ax, "no cell reached the target")
                continue
            # One point per global batch and worker count: with repeats, their mean.
            means = cells.groupby(["world_size", "global_batch"])[column].mean().reset_index()
            for workers, rows in means.groupby("world_size"):
                ax.plot(rows["global_batch"], rows[column], marker=worker_marker(workers), ls="-",
                        label=workers_text(workers))
            batch_axis(ax)
            plain_log_scale(ax, "y")
            ax.legend(fontsize="small", loc="best")
    figure_title(figure, f"Time to target ({target}), decomposed",
           "Per cell (with repeats, their mean): steps to target (how many updates the optimizer needs at this "
           "batch) x mean time per step over those steps (what the hardware and communication cost per update) = "
           "training time to target.")
    return figure


TTA_PARTS = (("steps_to_target", "Steps to target (updates)", "statistical efficiency"),
             ("time_per_step_s", "Time per step (s)", "hardware efficiency"),
             ("time_to_target_s", TIME_TO_TARGET_LABEL, "= steps x time per step"))


def tta_decomposition_by_group(groups: list[GroupAnswer], reached: list[pd.DataFrame], target: str) -> Figure:
    """Where each group (optimizer, warm-up, ...) ran one configuration: its three parts side by
    side across the groups, one panel per part."""
    labels = [", ".join(str(value) for value in group.group.values()) for group in groups]
    rows = pd.DataFrame([cells.iloc[0] if len(cells) else pd.Series({"status": "complete"}) for cells in reached])
    rows = rows.reset_index(drop=True)
    # Three quantities in three units: each panel its own y axis.
    figure = Figure(figsize=(15, 5.4), layout="constrained")
    axes = list(figure.subplots(1, 3, squeeze=False).flat)
    axis_name = ", ".join(groups[0].group)
    for ax, (column, label, meaning) in zip(axes, TTA_PARTS):
        if column not in rows.columns:
            rows[column] = np.nan
        category_bars(ax, rows, column, labels)
        ax.set_title(meaning, fontsize="medium")
        ax.set_xlabel(axis_name)
        ax.set_ylabel(label)
    figure_title(figure, f"Time to target ({target}), decomposed, by {axis_name}",
                 "Each configuration ran at one batch size and worker count: steps to target (how many updates "
                 "the optimizer needs) x mean time per step over those steps = training time to target. "
                 "x: did not reach the target.")
    return figure


def cost_column(group: GroupAnswer) -> str:
    """"cost" (money) where the group's hardware is priced, as the answer's cheapest is; else "gpu_hours"."""
    shown = [frame.dropna(subset=["time_to_target_s"]) for frame in (group.predicted, group.measured)
             if len(frame) and "time_to_target_s" in frame.columns]
    rows = pd.concat(shown, ignore_index=True) if shown else pd.DataFrame()
    return "cost" if "cost" in rows.columns and in_money(rows["cost"].tolist()) else "gpu_hours"


def pareto_figure(groups: list[GroupAnswer], answer: StudyAnswer) -> Figure:
    figure, axes = _titled_panels(groups)
    for ax, group in zip(axes, groups):
        cost = cost_column(group)
        ax.set_xlabel(COST_LABEL if cost == "cost" else GPU_HOURS_LABEL)
        ax.set_ylabel(TIME_TO_TARGET_LABEL)
        predicted = group.predicted
        measured = group.measured.dropna(subset=["time_to_target_s"]) if len(group.measured) else group.measured
        if (predicted.empty or "time_to_target_s" not in predicted.columns
                or predicted["time_to_target_s"].isna().all()) and measured.empty:
            note_empty(ax, "nothing reached the target or could be predicted to")
            continue
        points = []
        if len(predicted) and "time_to_target_s" in predicted.columns:
            shown = predicted.dropna(subset=["time_to_target_s"])
            for workers, rows in shown.groupby("workers"):
                ax.scatter(rows[cost], rows["time_to_target_s"], marker=worker_marker(workers), s=40,
                           facecolors="none", edgecolors="C0", alpha=0.8)
            points.append(shown[[cost, "time_to_target_s"]])
        for workers, rows in measured.groupby("workers"):
            ax.scatter(rows[cost], rows["time_to_target_s"], marker=worker_marker(workers), s=70,
                       color="C1", edgecolor="black", zorder=5)
        points.append(measured[[cost, "time_to_target_s"]])
        every = pd.concat(points, ignore_index=True)
        front = every[pareto_front(every["time_to_target_s"].to_numpy(), every[cost].to_numpy())]
        front = front.sort_values(cost)
        ax.plot(front[cost], front["time_to_target_s"], color="C3", lw=1.5, zorder=3)
        for offset, (label, choice) in enumerate(answer_labels(answer, group).items()):
            ax.annotate(f"{label}: {workers_text(choice.workers)} x batch {choice.per_worker_batch:g} ({choice.source})",
                        (getattr(choice, cost), choice.time_to_target_s), xytext=(24, 24 + 16 * offset),
                        textcoords="offset points", fontsize="small", arrowprops={"arrowstyle": "->"})
        plain_log_scale(ax, "x")
        plain_log_scale(ax, "y")
        workers = sorted({int(n) for n in pd.concat([predicted.get("workers", pd.Series(dtype=float)),
                                                      measured["workers"]]).dropna()})
        handles: list[Line2D | Patch] = [
            Line2D([], [], ls="none", marker="o", color="C1", markeredgecolor="black", label="measured"),
            Line2D([], [], ls="none", marker="o", markerfacecolor="none", color="C0", label="predicted"),
            Line2D([], [], color="C3", label="Pareto front"), *worker_handles(workers)]
        ax.legend(handles=handles, fontsize="x-small", loc="best")
    figure_title(figure, f"Time to target ({answer.target}) vs its cost",
           "Each point a configuration (marker: workers); filled: measured, hollow: predicted from the B_crit fit "
           "and the step-time model. On the red front nothing is both faster and cheaper; left is cheaper, "
           "lower is faster.")
    return figure


def answer_labels(answer: StudyAnswer, group: GroupAnswer) -> dict[str, Choice]:
    """The group's fastest and cheapest choices by label; one "fastest and cheapest" when they coincide."""
    options = [("fastest", answer.fastest, answer.fastest_group), ("cheapest", answer.cheapest, answer.cheapest_group)]
    for per_target in answer.per_target:  # where the target is an axis: the choices to this group's target
        options += [("fastest", per_target.fastest, per_target.fastest_group),
                    ("cheapest", per_target.cheapest, per_target.cheapest_group)]
    chosen = {label: choice for label, choice, where in options if choice is not None and where == group.group}
    if len(chosen) == 2 and same_configuration(chosen["fastest"], chosen["cheapest"]):
        return {"fastest and cheapest": chosen["fastest"]}
    return chosen


def same_configuration(one: Choice, other: Choice) -> bool:
    return (one.workers, one.per_worker_batch, one.source, one.cell) == \
        (other.workers, other.per_worker_batch, other.source, other.cell)


def holdout_figure(groups: list[GroupAnswer]) -> Figure:
    figure, axes = _titled_panels(groups)
    for ax, group in zip(axes, groups):
        ax.set_xlabel("Measured time per step (ms)")
        ax.set_ylabel("Predicted time per step (ms)")
        held = group.held_out
        if held is None or held.empty:
            note_empty(ax, "needs cells at 3+ worker counts")
            continue
        measured = held["time_per_step_s"] * 1e3
        predicted = held["predicted_s"] * 1e3
        errors = np.vstack([predicted - held["predicted_low_s"] * 1e3, held["predicted_high_s"] * 1e3 - predicted])
        ax.errorbar(measured, predicted, yerr=np.clip(errors, 0, None), fmt="o", color="C0", capsize=3)
        for row, x, y in zip(held.itertuples(), measured, predicted):
            ax.annotate(f"batch {row.per_worker_batch:g}: {row.relative_error:+.0%}", (x, y), xytext=(6, -12),
                        textcoords="offset points", fontsize="small")
        low, high = min(measured.min(), predicted.min()) * 0.8, max(measured.max(), predicted.max()) * 1.2
        ax.plot([low, high], [low, high], color=REFERENCE_COLOR, ls="--", label="prediction = measurement")
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.legend(fontsize="small", loc="upper left")
        top = int(held["workers"].max())
        ax.set_title(f"{group_label(group) + ': ' if group.group else ''}{top} workers held out", fontsize="medium")
    figure_title(figure, "How well the scaling model predicts a worker count it has not seen",
           "The step-time model (compute + ring allreduce) fitted without the largest worker count, then asked for "
           "it; error bars: 95 % interval of the prediction; labels: prediction error.")
    return figure


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The study's answer: fastest and cheapest configuration to target.")
    parser.add_argument("runs", type=Path, help="results/<study>/runs.csv")
    parser.add_argument("--epochs", type=Path, help="results/<study>/epochs.csv (default: beside runs.csv)")
    parser.add_argument("--out", type=Path, help="directory for answer.md, answer.html, answer.json, "
                        "predictions.csv, holdout.csv (default: beside runs.csv)")
    parser.add_argument("--figures", type=Path, help="directory for the answer's figures (default: <out>/figures)")
    parser.add_argument("--study", help="the study's name (default: the runs' directory name)")
    args = parser.parse_args(argv)

    runs = pd.read_csv(args.runs)
    out = args.out or args.runs.parent
    epochs = pd.read_csv(args.epochs or args.runs.with_name("epochs.csv"))
    answer = write_answer(runs, out, args.study or args.runs.parent.name)
    make_answer_figures(answer, epochs, runs, args.figures or out / "figures")
    print(answer_markdown(answer))


if __name__ == "__main__":
    main()
