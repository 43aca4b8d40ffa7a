"""Seaborn figures of a scaling study, each saved as PNG and SVG.

    python -m analysis.figures results/<study>/runs.csv results/<study>/epochs.csv \\
        --out results/<study>/figures --target 0.9

Only cells that finished (status complete or diverged) are drawn; failed and
broken cells are left out, and a study with none of the former still gets every
figure, with a note on empty axes. Grid axes other than batch size and workers
(warm-up, lr scaling, ...) become one panel each, so distinct runs are never
averaged together. Lines and bars are coloured by batch size, or by backend (Horovod,
DDP) where that is a grid axis: then each batch size gets a panel, so that the
backends are compared line against line. Figures are built on matplotlib Figure objects, which render
with the Agg backend whatever pyplot's backend is.
"""

from __future__ import annotations

import argparse
import math
import textwrap
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import LogFormatter, MaxNLocator, NullLocator, PercentFormatter

from analysis.metrics import REPLICATE_AXES
from analysis.tables import DEFAULT_GRID_AXES, FINISHED_STATUSES, grid_axes_of

FIGURE_FORMATS = ("png", "svg")
BATCH_AXIS, WORKERS_AXIS = "batch_size", "gpus"
NUMERIC_RESULTS = ("throughput", "throughput_ci95", "efficiency", "time_to_target_s")
# What lines and bars are coloured by: the batch size, or an axis named here when the grid has it.
COLOUR, BAR_PANEL = "colour", "bar_panel"
COLOUR_AXES = {"backend": "Data-parallel backend"}

BATCH_LEGEND_TITLE = "Per-worker batch size (samples)"
GLOBAL_BATCH_LEGEND_TITLE = "Global batch size (samples, all workers together)"
WORKERS_LABEL = "Workers (GPUs / worker processes)"
WORKER_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">")
REFERENCE_COLOR = "0.35"
PANEL_WIDTH_IN, PANEL_HEIGHT_IN, MAX_PANEL_COLUMNS = 5.5, 4.0, 3
LEGEND_ENTRY_WIDTH_IN = 1.2
CATEGORY_LEGEND_ENTRY_WIDTH_IN = 2.0  # "linear, 3", "novograd": wider than a batch size


@contextmanager
def figure_style() -> Iterator[None]:
    """The look of every figure; a fixed SVG hash salt keeps element ids, and so the files,
    identical across reruns (it applies when a figure is saved, so save inside it too)."""
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook"), \
            matplotlib.rc_context({"svg.hashsalt": "scaling-study"}):
        yield


def study_figures(runs: pd.DataFrame, epochs: pd.DataFrame, target_accuracy: float | None = None) -> dict[str, Figure]:
    """Every figure of analysis.FIGURE_NAMES, built (call within figure_style); save_figures
    keeps those the data fill.

    ``target_accuracy`` draws the target line; when None, the runs' own
    ``target_accuracy`` parameter is used if they agree on one.
    """
    grid_axes = grid_axes_of(runs)
    finished = finished_runs(runs, grid_axes)
    curves = _accuracy_curves(epochs, finished)
    run_target = _common_value(runs, "target_accuracy")
    line_target = target_accuracy if target_accuracy is not None else run_target
    # One point per (panel, batch, workers): repeats are averaged, with their t interval.
    points = over_replicates(finished)
    return {
        "throughput": throughput_figure(points),
        "throughput_vs_batch": throughput_vs_batch_figure(points),
        "scaling_efficiency": scaling_efficiency_figure(points),
        # time_to_target_s was computed against each run's own target: name that one.
        "time_to_accuracy": time_to_accuracy_figure(
            points, run_target if run_target is not None else line_target, _common_value(runs, "patience")
        ),
        "accuracy_vs_time": accuracy_vs_time_figure(curves, finished, line_target),
    }


@dataclass(frozen=True)
class FigureOutcome:
    """Whether a figure was drawn; if not, why; if so, the panels it left out and why."""

    name: str
    drawn: bool
    why: str = ""
    left_out: tuple[str, ...] = ()


def save_figures(figures: dict[str, Figure], out_dir: Path) -> list[FigureOutcome]:
    """Save the figures the data fill as <name>.png and .svg (call within figure_style)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    outcomes = []
    for name, figure in figures.items():
        why, left_out = finish_figure(figure)
        if why is None:
            save_figure(figure, out_dir, name)
        else:  # an earlier run's, from data that filled it then: it would no longer match the tables
            for extension in FIGURE_FORMATS:
                (out_dir / f"{name}.{extension}").unlink(missing_ok=True)
        outcomes.append(FigureOutcome(name, why is None, why or "", tuple(left_out)))
    return outcomes


def make_all_figures(
    runs: pd.DataFrame,
    epochs: pd.DataFrame,
    out_dir: Path,
    target_accuracy: float | None = None,
) -> list[FigureOutcome]:
    """Draw into ``out_dir`` every figure the data fill, as <name>.png and <name>.svg."""
    with figure_style():
        return save_figures(study_figures(runs, epochs, target_accuracy), Path(out_dir))


def save_figure(figure: Figure, out_dir: Path, name: str) -> list[Path]:
    paths = [out_dir / f"{name}.{extension}" for extension in FIGURE_FORMATS]
    for path in paths:
        metadata = {"Date": None} if path.suffix == ".svg" else {}
        figure.savefig(path, dpi=150, metadata=metadata)
    return paths


# ---- preparing the tables ---------------------------------------------------


def finished_runs(runs: pd.DataFrame, grid_axes: Sequence[str]) -> pd.DataFrame:
    """Complete and diverged runs with integer batch size and workers, and a ``panel`` label."""
    finished = runs.loc[runs["status"].isin(FINISHED_STATUSES)].copy()
    if is_strong_scaling(finished):  # lines and colours follow the batch the study holds fixed
        finished[BATCH_AXIS] = finished["global_batch"]
    for column in (*DEFAULT_GRID_AXES, *NUMERIC_RESULTS):
        finished[column] = pd.to_numeric(finished.get(column), errors="coerce")
    finished = finished.dropna(subset=list(DEFAULT_GRID_AXES))
    finished[list(DEFAULT_GRID_AXES)] = finished[list(DEFAULT_GRID_AXES)].astype(int)
    # Replicates (repeat, seed) are averaged, not split into panels.
    other_axes = [axis for axis in grid_axes
                  if axis not in DEFAULT_GRID_AXES and axis not in REPLICATE_AXES and axis in finished.columns]
    colour = colour_axis(other_axes)
    finished[COLOUR] = finished[colour]
    if colour == BATCH_AXIS:
        finished["panel"] = finished[BAR_PANEL] = panel_labels(finished, other_axes)
    else:
        # The batch size leaves the colours for a panel of its own; the bar chart over batch
        # sizes keeps them together, with a panel per colour instead.
        other_axes.remove(colour)
        finished[BAR_PANEL] = panel_labels(finished, [*other_axes, colour])
        other_axes.insert(0, BATCH_AXIS)
        finished["panel"] = panel_labels(finished, other_axes)
    finished = _sort_values_safely(finished, [*other_axes, BATCH_AXIS, WORKERS_AXIS])
    return finished.reset_index(drop=True)


def colour_axis(axes: Sequence[str]) -> str:
    return next((axis for axis in COLOUR_AXES if axis in axes), BATCH_AXIS)


def panel_labels(finished: pd.DataFrame, axes: Sequence[str]) -> list[str] | str:
    if not axes:
        return ""
    return [", ".join(f"{axis}={_format_value(value)}" for axis, value in zip(axes, values))
            for values in finished[list(axes)].itertuples(index=False)]


REPEATS_COLUMN = "repeats"


def is_strong_scaling(frame: pd.DataFrame) -> bool:
    """A strong-scaling study (runs.csv's ``scaling`` column): its batch is the global one."""
    return "scaling" in frame.columns and bool((frame["scaling"] == "strong").any())


def batch_title(frame: pd.DataFrame) -> str:
    return GLOBAL_BATCH_LEGEND_TITLE if is_strong_scaling(frame) else BATCH_LEGEND_TITLE


def colour_title(frame: pd.DataFrame) -> str:
    """The legend title of the colours: the batch size's, or the colour axis's."""
    if COLOUR in frame.columns and len(frame):
        for axis, title in COLOUR_AXES.items():
            if axis in frame.columns and frame[COLOUR].equals(frame[axis]):
                return title
    return batch_title(frame)


def over_replicates(finished: pd.DataFrame) -> pd.DataFrame:
    """With a replicate axis (repeat, seed), one row per panel, batch size and workers: the
    mean over the repeats and its Student's t interval (collect.py's *_over_repeats
    columns); a group is diverged only if every repeat diverged. Otherwise unchanged."""
    if REPEATS_COLUMN not in finished.columns or finished.empty:
        return finished
    rows = []
    for _, group in finished.groupby(["panel", COLOUR, BATCH_AXIS, WORKERS_AXIS], sort=False):
        row = group.iloc[0].copy()
        for name in ("throughput", "efficiency", "time_to_target_s"):
            row[name] = pd.to_numeric(pd.Series([row.get(f"{name}_over_repeats")]), errors="coerce").iloc[0]
        row["throughput_ci95"] = row.get("throughput_over_repeats_ci95")
        row["efficiency_ci95"] = row.get("efficiency_over_repeats_ci95")
        row["time_to_target_s_ci95"] = row.get("time_to_target_s_over_repeats_ci95")
        row["status"] = "diverged" if (group["status"] == "diverged").all() else "complete"
        row[REPEATS_COLUMN] = len(group)
        rows.append(row)
    return pd.DataFrame(rows).reset_index(drop=True)


def _interval_text(points: pd.DataFrame, within_run: str) -> str:
    if REPEATS_COLUMN in points.columns and len(points):
        counts = sorted({int(n) for n in points[REPEATS_COLUMN]})
        shown = "/".join(str(n) for n in counts)
        return f"mean of {shown} repeats; error bars: 95 % Student's t interval over the repeats"
    return within_run


def _accuracy_curves(epochs: pd.DataFrame, finished: pd.DataFrame) -> pd.DataFrame:
    needed = ["cell", "epoch", "train_time_s", "val_accuracy"]
    if finished.empty or not set(needed) <= set(epochs.columns):
        return pd.DataFrame(columns=[*needed, "status", COLOUR, BATCH_AXIS, WORKERS_AXIS, "panel"])
    curves = epochs[needed].merge(finished[["cell", "status", COLOUR, BATCH_AXIS, WORKERS_AXIS, "panel"]], on="cell")
    for column in ("train_time_s", "val_accuracy"):
        curves[column] = pd.to_numeric(curves[column], errors="coerce")
    curves = curves.dropna(subset=["train_time_s", "val_accuracy"])
    if REPEATS_COLUMN in finished.columns and len(curves):
        curves = mean_curves(curves, finished)
    return curves.sort_values(["cell", "epoch"])


def mean_curves(curves: pd.DataFrame, finished: pd.DataFrame) -> pd.DataFrame:
    """With a replicate axis, one curve per configuration: at each epoch the mean time and
    accuracy over the repeats that ran it; diverged only if every repeat diverged."""
    keys = ["panel", COLOUR, BATCH_AXIS, WORKERS_AXIS]
    mean = curves.groupby([*keys, "epoch"], sort=False)[["train_time_s", "val_accuracy"]].mean().reset_index()
    all_diverged = finished.groupby(keys, sort=False)["status"].agg(lambda status: (status == "diverged").all())
    mean = mean.merge(all_diverged.rename("all_diverged").reset_index(), on=keys)
    mean["status"] = np.where(mean["all_diverged"], "diverged", "complete")
    mean["cell"] = mean[keys].astype(str).agg(" / ".join, axis=1)
    return mean.drop(columns="all_diverged")


def _format_value(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _sort_values_safely(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    try:
        return frame.sort_values(keys, kind="stable")
    except TypeError:  # an axis mixing numbers and text
        return frame.sort_values([BATCH_AXIS, WORKERS_AXIS], kind="stable")


def _common_value(runs: pd.DataFrame, column: str) -> float | None:
    values = pd.to_numeric(runs.get(column, pd.Series(dtype=float)), errors="coerce").dropna().unique()
    return float(values[0]) if len(values) == 1 else None


# ---- layout helpers ---------------------------------------------------------


def _panels(finished: pd.DataFrame, column: str = "panel") -> list[str]:
    return list(dict.fromkeys(finished[column])) or [""]


def new_figure(panel_count: int) -> tuple[Figure, list[Axes]]:
    columns = min(panel_count, MAX_PANEL_COLUMNS)
    rows = math.ceil(panel_count / columns)
    figure = Figure(figsize=(PANEL_WIDTH_IN * columns + 1.0, PANEL_HEIGHT_IN * rows + 1.8), layout="constrained")
    grid = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)
    axes = list(grid.flat)
    for unused in axes[panel_count:]:
        unused.remove()
    # Panels above a removed one sit at the bottom of their column: give back their x labels.
    for index in range(max(panel_count - columns, 0), panel_count):
        axes[index].xaxis.set_tick_params(labelbottom=True)
    return figure, axes[:panel_count]


def _label(axes: list[Axes], columns: int, xlabel: str, ylabel: str, panels: list[str]) -> None:
    for index, (ax, panel) in enumerate(zip(axes, panels)):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel if index % columns == 0 else "")
        if panel:
            ax.set_title(panel, fontsize="medium")


def batch_palette(batch_sizes: Sequence[Any]) -> dict[Any, tuple[float, float, float]]:
    """Colours of the batch sizes (or of the colour axis's values)."""
    levels = sorted(set(batch_sizes))
    colors = sns.color_palette("colorblind" if len(levels) <= 10 else "viridis", max(len(levels), 1))
    return dict(zip(levels, colors))


def batch_legend(figure: Figure, palette: dict[Any, tuple[float, float, float]], finished: pd.DataFrame,
                  bars: bool = False) -> None:
    handles: list[Line2D | Patch] = [
        Patch(color=color, label=str(batch)) if bars else Line2D([], [], color=color, marker="o", lw=2, label=str(batch))
        for batch, color in palette.items()
    ]
    if handles:
        fitting_columns = max(3, int(figure.get_figwidth() / LEGEND_ENTRY_WIDTH_IN))
        figure.legend(handles=handles, title=colour_title(finished), loc="outside lower center",
                      ncols=min(len(handles), fitting_columns))


def _reference_legend(ax: Axes, handles: Sequence[Line2D | Patch], title: str) -> None:
    if handles:
        ax.legend(handles=handles, title=title, loc="best", fontsize="small", title_fontsize="small")


def _worker_ticks(ax: Axes, workers: Sequence[int]) -> bool:
    """Integer ticks at the worker counts used; base-2 log scale (returns True) when they span 8x or more."""
    levels = sorted(set(int(worker) for worker in workers))
    if not levels:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        return False
    logarithmic = levels[-1] / levels[0] >= 8
    if logarithmic:
        ax.set_xscale("log", base=2)
    ax.set_xticks(levels, [str(level) for level in levels])
    ax.xaxis.set_minor_locator(NullLocator())
    return logarithmic


class PlainLogFormatter(LogFormatter):
    """matplotlib's choice of which log ticks to label, each as a plain number: 0.006, 20,
    300000, never 6e-03 or 6 x 10^0."""

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        return np.format_float_positional(x, precision=3, unique=False, fractional=False, trim="-")


def plain_log_scale(ax: Axes, axis: str = "y", base: float = 10) -> None:
    """A log axis whose ticks read 6, 20, 0.005, not 6 x 10^0 or 5e-03."""
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log", base=base)
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(PlainLogFormatter(base=base, labelOnlyBase=False))
    target.set_minor_formatter(PlainLogFormatter(base=base, labelOnlyBase=False, minor_thresholds=(2, 0.5)))


TITLE_CHARACTERS_PER_INCH = 11  # of the suptitle's medium font in seaborn's notebook context


def figure_title(figure: Figure, headline: str, detail: str) -> None:
    """The headline, and the detail wrapped to the figure's width, so that a one-panel figure
    shows all of it."""
    width = int(figure.get_figwidth() * TITLE_CHARACTERS_PER_INCH)
    lines = [textwrap.fill(line, width) for line in detail.split("\n")]
    figure.suptitle("\n".join([headline, *lines]), fontsize="medium")


EMPTY_PANEL_LABEL = "empty panel: "


def note(ax: Axes, message: str) -> None:
    """A line of text in the middle of a panel."""
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", color=REFERENCE_COLOR)


def note_empty(ax: Axes, message: str) -> None:
    """A panel the data cannot fill, and why: finish_figure leaves it out and names it."""
    note(ax, message)
    ax.set_label(EMPTY_PANEL_LABEL + message)


def empty_reason(ax: Axes) -> str | None:
    label = str(ax.get_label())
    return label[len(EMPTY_PANEL_LABEL):] if label.startswith(EMPTY_PANEL_LABEL) else None


def finish_figure(figure: Figure) -> tuple[str | None, list[str]]:
    """A figure as drawn: (why it is not worth drawing, None when it is; the panels left out).

    A figure none of whose panels the data can fill is not drawn; the others lose their empty
    panels, each named with its title and why. A line through a single point is drawn as the
    point it is."""
    panels = [ax for ax in figure.axes if ax.get_label() != "<colorbar>"]
    reasons = {ax: empty_reason(ax) for ax in panels}
    if panels and all(reason is not None for reason in reasons.values()):
        return "; ".join(dict.fromkeys(reason for reason in reasons.values() if reason)), []
    left_out = []
    for ax, reason in reasons.items():
        if reason is not None:
            left_out.append(f"{ax.get_title() or 'a panel'}: {reason}")
            ax.remove()
    for ax in figure.axes:
        for line in ax.get_lines():
            if np.size(line.get_xdata()) == 1 and line.get_linestyle() not in ("None", "", " "):
                line.set_linestyle("None")
                if line.get_marker() in (None, "None", "", " "):
                    line.set_marker("o")
    return None, left_out


def _diverged_marks(ax: Axes, rows: pd.DataFrame, x: str, y: pd.Series) -> bool:
    diverged = rows["status"] == "diverged"
    ax.scatter(rows.loc[diverged, x], y[diverged], marker="x", s=80, color="black", zorder=5)
    return bool(diverged.any())


def one_worker_count(finished: pd.DataFrame) -> str | None:
    """Why a figure against workers has nothing to show: the study runs one worker count only."""
    counts = sorted(finished[WORKERS_AXIS].unique())
    if len(counts) == 1:
        return f"the study runs {counts[0]} worker{'s' if counts[0] != 1 else ''} only"
    return None


# (reached the target, diverged) -> what the time-to-accuracy figure shows.
TTA_OUTCOMES = {
    (True, False): "reached",
    (True, True): "reached, then diverged",
    (False, False): "not reached",
    (False, True): "diverged",
}
TTA_MARKERS = {"not reached": "x", "diverged": "v"}
MAX_ANNOTATED_BATCH_SIZES = 4

DIVERGED_HANDLE = Line2D([], [], color="black", marker="x", ls="none", label="diverged run")
NO_FINISHED_CELLS = "no finished cells to plot"


def one_configuration_per_panel(points: pd.DataFrame, panel_column: str = "panel") -> bool:
    """Whether each panel would hold a single point: what varies is the panels' own axis
    (optimizer, warm-up, ...), so its values are compared side by side in one panel instead."""
    if points.empty or points[panel_column].nunique() < 2:
        return False
    configurations = points.groupby(panel_column)[[COLOUR, BATCH_AXIS, WORKERS_AXIS]].nunique()
    return bool((configurations == 1).all().all())


def category_bars(ax: Axes, points: pd.DataFrame, column: str, labels: Sequence[str]) -> set[str]:
    """One bar per row of ``points`` (in order), labelled on the x axis: the mean with its
    interval (``column``_ci95) where there is one, hatched where the run diverged, and a mark at
    zero with a word where the value is missing. Returns the kinds of marks drawn."""
    palette = dict(zip(labels, sns.color_palette("colorblind" if len(labels) <= 10 else "viridis", len(labels))))
    marks: set[str] = set()
    values = pd.to_numeric(points[column], errors="coerce").to_numpy()
    spreads = pd.to_numeric(points.get(f"{column}_ci95", pd.Series(np.nan, index=points.index)),
                            errors="coerce").to_numpy()
    for position, (label, value, spread, status) in enumerate(zip(labels, values, spreads, points["status"])):
        diverged = status == "diverged"
        if np.isfinite(value):
            ax.bar(position, value, 0.7, color=palette[label], edgecolor="black" if diverged else palette[label],
                   hatch="//" if diverged else None)
            if np.isfinite(spread):
                ax.errorbar(position, value, yerr=spread, fmt="none", ecolor="black", capsize=4)
            marks |= {"diverged"} if diverged else set()
        else:
            word = "diverged" if diverged else "not reached"
            ax.plot(position, 0, marker="v" if diverged else "x", ms=10, mew=2.5, color=palette[label],
                    markeredgecolor="black" if diverged else palette[label], clip_on=False, zorder=5, ls="None")
            ax.annotate(word, (position, 0), xytext=(0, 8), textcoords="offset points", rotation=90, ha="center",
                        va="bottom", fontsize="small", color=REFERENCE_COLOR)
            marks.add(word)
    long_labels = max((len(label) for label in labels), default=0) > 12
    ax.set_xticks(range(len(labels)), labels, rotation=30 if long_labels else 0, ha="right" if long_labels else "center")
    ax.grid(False, axis="x")
    ax.set_ylim(bottom=0)
    return marks


def category_labels(panels: pd.Series) -> list[str]:
    """A panel label's values without the axis names ("optimizer=lars" -> "lars"): the axis names
    the x axis."""
    return [", ".join(part.split("=", 1)[-1] for part in str(panel).split(", ")) for panel in panels]


def panel_axes_title(points: pd.DataFrame) -> str:
    """What the panels' labels name (\"optimizer\", \"lr_scaling, warmup_epochs\"), for an x axis."""
    first = str(points["panel"].iloc[0]) if len(points) else ""
    return ", ".join(part.split("=")[0] for part in first.split(", ")) or "configuration"


def configuration_text(points: pd.DataFrame) -> str:
    row = points.iloc[0]
    return f"per-worker batch {_format_value(row[BATCH_AXIS])}, {workers_phrase(int(row[WORKERS_AXIS]))}"


def workers_phrase(workers: int) -> str:
    return f"{workers} worker{'s' if workers != 1 else ''}"


# ---- the figures ------------------------------------------------------------


def throughput_figure(finished: pd.DataFrame) -> Figure:
    """Steady-state samples/s vs workers, one line per batch size, with ideal N·X_1 lines."""
    panels = _panels(finished)
    figure, axes = new_figure(len(panels))
    palette = batch_palette(finished[COLOUR])
    measured = finished[np.isfinite(finished["throughput"])]
    any_diverged = False
    any_ideal = False
    single = one_worker_count(finished)
    for ax, panel in zip(axes, panels):
        rows = measured[measured["panel"] == panel]
        if rows.empty or single:
            note_empty(ax, f"no throughput against workers: {single}" if single else NO_FINISHED_CELLS)
        else:
            sns.lineplot(data=rows, x=WORKERS_AXIS, y="throughput", hue=COLOUR, palette=palette,
                         marker="o", errorbar=None, legend=False, ax=ax)
            for batch, group in rows.groupby(COLOUR):
                ax.errorbar(group[WORKERS_AXIS], group["throughput"], yerr=group["throughput_ci95"].fillna(0),
                            fmt="none", ecolor=palette[batch], capsize=4)
                baseline = group.loc[(group[WORKERS_AXIS] == 1) & (group["status"] == "complete"), "throughput"]
                if not baseline.empty:
                    workers = np.array(sorted(rows[WORKERS_AXIS].unique()))
                    ax.plot(workers, workers * baseline.iloc[0], ls="--", color=palette[batch], alpha=0.7)
                    any_ideal = True
            any_diverged |= _diverged_marks(ax, rows, WORKERS_AXIS, rows["throughput"])
        # Over a wide range of workers, log-log keeps small counts readable and ideal lines straight.
        logarithmic = _worker_ticks(ax, finished[WORKERS_AXIS]) and not measured.empty
        if logarithmic:
            plain_log_scale(ax, "y")
    if not logarithmic:
        # Once every panel is drawn: the panels share their y axis, and a limit set earlier would freeze it.
        axes[0].set_ylim(bottom=0)
    _label(axes, min(len(panels), MAX_PANEL_COLUMNS), WORKERS_LABEL, "Throughput (samples/s)", panels)
    figure_title(figure, "Steady-state training throughput",
           "samples / time in training steps; first epoch left out; "
           + _interval_text(finished, "error bars: 95 % CI of the mean"))
    batch_legend(figure, palette, finished)
    references = [Line2D([], [], color=REFERENCE_COLOR, ls="--", label="ideal linear scaling (N × 1-worker)")] if any_ideal else []
    _reference_legend(axes[-1], references + ([DIVERGED_HANDLE] if any_diverged else []), "Reference")
    return figure


def throughput_vs_batch_figure(finished: pd.DataFrame) -> Figure:
    """The course's bar chart: steady-state samples/s per batch size, one bar per worker count;
    where each panel would be one bar, the panels' values side by side in one panel."""
    if one_configuration_per_panel(finished, BAR_PANEL):
        figure, (ax,) = new_figure(1)
        marks = category_bars(ax, finished, "throughput", category_labels(finished[BAR_PANEL]))
        ax.set_xlabel(panel_axes_title(finished.assign(panel=finished[BAR_PANEL])))
        ax.set_ylabel("Throughput (samples/s)")
        figure_title(figure, "Throughput by configuration",
                     f"steady-state samples/s, all workers together, first epoch left out; "
                     f"{configuration_text(finished)} in every cell; "
                     + _interval_text(finished, "error bars: 95 % CI of the mean"))
        _reference_legend(ax, [Patch(facecolor="white", edgecolor="black", hatch="//", label="diverged run")]
                          if "diverged" in marks else [], "Marks")
        return figure
    panels = _panels(finished, BAR_PANEL)
    figure, axes = new_figure(len(panels))
    worker_levels = sorted(finished[WORKERS_AXIS].unique())
    batch_levels = sorted(finished[BATCH_AXIS].unique())
    colors = dict(zip(worker_levels, sns.color_palette("crest", max(len(worker_levels), 1))))
    bar_width = 0.8 / max(len(worker_levels), 1)
    any_diverged = False
    for ax, panel in zip(axes, panels):
        rows = finished[(finished[BAR_PANEL] == panel) & np.isfinite(finished["throughput"])]
        if rows.empty:
            note_empty(ax, NO_FINISHED_CELLS)
        for _, row in rows.iterrows():
            slot = worker_levels.index(row[WORKERS_AXIS]) - (len(worker_levels) - 1) / 2
            position = batch_levels.index(row[BATCH_AXIS]) + slot * bar_width
            diverged = row["status"] == "diverged"
            any_diverged |= diverged
            ax.bar(position, row["throughput"], bar_width * 0.9, color=colors[row[WORKERS_AXIS]],
                   edgecolor="black" if diverged else colors[row[WORKERS_AXIS]], hatch="//" if diverged else None)
            spread = pd.to_numeric(pd.Series([row.get("throughput_ci95")]), errors="coerce").iloc[0]
            if np.isfinite(spread):
                ax.errorbar(position, row["throughput"], yerr=spread, fmt="none", ecolor="black", capsize=3)
        ax.set_xticks(range(len(batch_levels)), [str(level) for level in batch_levels])
        ax.grid(False, axis="x")
    axes[0].set_ylim(bottom=0)  # once every panel is drawn: they share their y axis
    _label(axes, min(len(panels), MAX_PANEL_COLUMNS), batch_title(finished), "Throughput (samples/s)", panels)
    figure_title(figure, "Throughput vs batch size",
           "steady-state samples/s, all workers together, first epoch left out;\n"
           + _interval_text(finished, "error bars: 95 % CI of the mean"))
    handles: list[Line2D | Patch] = [Patch(color=color, label=str(workers)) for workers, color in colors.items()]
    if handles:
        figure.legend(handles=handles, title=WORKERS_LABEL, loc="outside lower center", ncols=min(len(handles), 6))
    if any_diverged:
        _reference_legend(axes[-1], [Patch(facecolor="white", edgecolor="black", hatch="//", label="diverged run")],
                          "Marks")
    return figure


def scaling_efficiency_figure(finished: pd.DataFrame) -> Figure:
    """Weak-scaling efficiency X_N / (N·X_1) in % vs workers, one line per batch size."""
    panels = _panels(finished)
    figure, axes = new_figure(len(panels))
    palette = batch_palette(finished[COLOUR])
    efficiency_percent = 100 * finished["efficiency"]
    highest = efficiency_percent.max() if efficiency_percent.notna().any() else 100
    any_diverged = False
    for ax, panel in zip(axes, panels):
        in_panel = (finished["panel"] == panel) & efficiency_percent.notna()
        rows = finished[in_panel].assign(efficiency_percent=efficiency_percent[in_panel])
        ax.axhline(100, color=REFERENCE_COLOR, ls="--", lw=1.2)
        single = one_worker_count(finished)
        if rows.empty or single:
            note_empty(ax, f"no scaling efficiency: {single}" if single else
                       "no cell with a complete 1-worker baseline" if len(finished) else NO_FINISHED_CELLS)
        else:
            sns.lineplot(data=rows, x=WORKERS_AXIS, y="efficiency_percent", hue=COLOUR, palette=palette,
                         marker="o", errorbar=None, legend=False, ax=ax)
            if "efficiency_ci95" in rows.columns:
                for batch, group in rows.groupby(COLOUR):
                    ax.errorbar(group[WORKERS_AXIS], group["efficiency_percent"],
                                yerr=100 * pd.to_numeric(group["efficiency_ci95"], errors="coerce").fillna(0),
                                fmt="none", ecolor=palette[batch], capsize=4)
            any_diverged |= _diverged_marks(ax, rows, WORKERS_AXIS, rows["efficiency_percent"])
        _worker_ticks(ax, finished[WORKERS_AXIS])
        ax.set_ylim(0, max(110, highest * 1.1))
    kind, definition = (("Strong", "T_1 / (N · T_N), global batch size fixed") if is_strong_scaling(finished)
                        else ("Weak", "X_N / (N · X_1), per-worker batch size fixed"))
    _label(axes, min(len(panels), MAX_PANEL_COLUMNS), WORKERS_LABEL, f"{kind}-scaling efficiency (%)", panels)
    figure_title(figure, f"{kind}-scaling efficiency",
           definition + ("; " + _interval_text(finished, "") if REPEATS_COLUMN in finished.columns else ""))
    batch_legend(figure, palette, finished)
    references = [Line2D([], [], color=REFERENCE_COLOR, ls="--", label="ideal (100 %)")]
    _reference_legend(axes[-1], references + ([DIVERGED_HANDLE] if any_diverged else []), "Reference")
    return figure


def time_to_accuracy_figure(finished: pd.DataFrame, target: float | None, patience: float | None) -> Figure:
    """Bars of time to target accuracy per cell; cells that never got there get a mark at zero.
    Where each panel would be one cell, the panels' values side by side in one panel."""
    target_text = f"{target:.0%}" if target is not None else "target"
    patience_text = f", held for {int(patience)} consecutive epochs" if patience and patience > 1 else ""
    if one_configuration_per_panel(finished) and finished["time_to_target_s"].notna().any():
        figure, (ax,) = new_figure(1)
        marks = category_bars(ax, finished, "time_to_target_s", category_labels(finished["panel"]))
        ax.set_xlabel(panel_axes_title(finished))
        ax.set_ylabel("Time to target accuracy (s of training steps)")
        figure_title(figure, "Time to target accuracy by configuration",
                     f"time in training steps until validation accuracy ≥ {target_text}{patience_text}; "
                     f"{configuration_text(finished)} in every cell")
        marked: list[Line2D | Patch] = []
        if "not reached" in marks:
            marked.append(Line2D([], [], color=REFERENCE_COLOR, marker="x", mew=2.5, ls="none",
                                 label="target not reached"))
        if "diverged" in marks:
            marked.append(Patch(facecolor="white", edgecolor="black", hatch="//", label="diverged run"))
        _reference_legend(ax, marked, "Marks")
        return figure
    panels = _panels(finished)
    figure, axes = new_figure(len(panels))
    palette = batch_palette(finished[COLOUR])
    worker_levels = sorted(finished[WORKERS_AXIS].unique())
    batch_levels = list(palette)
    bar_width = 0.8 / max(len(batch_levels), 1)
    # Rotated words only fit beside a few bars per group; otherwise the marks and legend say it.
    annotate = len(batch_levels) <= MAX_ANNOTATED_BATCH_SIZES
    tta = finished["time_to_target_s"]
    highest = tta.max() if tta.notna().any() else 1.0
    outcomes: set[str] = set()
    for ax, panel in zip(axes, panels):
        rows = finished[finished["panel"] == panel]
        if rows.empty:
            note_empty(ax, NO_FINISHED_CELLS)
        elif tta[rows.index].isna().all():
            note_empty(ax, "no cell reached the target")
        for index, row in rows.iterrows():
            slot = batch_levels.index(row[COLOUR]) - (len(batch_levels) - 1) / 2
            position = worker_levels.index(row[WORKERS_AXIS]) + slot * bar_width
            outcome = TTA_OUTCOMES[(bool(np.isfinite(tta[index])), row["status"] == "diverged")]
            outcomes.add(outcome)
            color = palette[row[COLOUR]]
            height = tta[index] if np.isfinite(tta[index]) else 0.0
            if outcome in ("reached", "reached, then diverged"):
                diverged = outcome != "reached"
                ax.bar(position, height, bar_width * 0.9, color=color,
                       edgecolor="black" if diverged else color, hatch="//" if diverged else None)
                spread = pd.to_numeric(pd.Series([row.get("time_to_target_s_ci95")]), errors="coerce").iloc[0]
                if np.isfinite(spread):
                    ax.errorbar(position, height, yerr=spread, fmt="none", ecolor="black", capsize=4)
            else:
                ax.plot(position, 0, marker=TTA_MARKERS[outcome], ms=10, mew=2.5 if outcome == "not reached" else 1,
                        color=color, markeredgecolor=color if outcome == "not reached" else "black", clip_on=False, zorder=5)
            if annotate and outcome != "reached":
                ax.annotate(outcome.split(", ")[-1], (position, height), xytext=(0, 8), textcoords="offset points",
                            rotation=90, ha="center", va="bottom", fontsize="small", color=REFERENCE_COLOR)
        ax.set_xticks(range(len(worker_levels)), [str(level) for level in worker_levels])
        ax.grid(False, axis="x")
        ax.set_xlim(-0.6, max(len(worker_levels), 1) - 0.4)
        # Headroom for the rotated labels.
        ax.set_ylim(0, highest * 1.35)
    _label(axes, min(len(panels), MAX_PANEL_COLUMNS), WORKERS_LABEL, "Time to target accuracy (s of training steps)", panels)
    replicated = "; " + _interval_text(finished, "") if REPEATS_COLUMN in finished.columns else ""
    figure_title(figure, "Time to target accuracy", f"time in training steps (not validation, checkpoints or start-up) until validation "
           f"accuracy ≥ {target_text}{patience_text}{replicated}")
    batch_legend(figure, palette, finished, bars=True)
    references: list[Line2D | Patch] = []
    if "reached, then diverged" in outcomes:
        references.append(Patch(facecolor="white", edgecolor="black", hatch="//", label="reached, then diverged"))
    if "not reached" in outcomes:
        references.append(Line2D([], [], color=REFERENCE_COLOR, marker="x", mew=2.5, ls="none", label="target not reached"))
    if "diverged" in outcomes:
        references.append(Line2D([], [], color=REFERENCE_COLOR, marker="v", markeredgecolor="black", ls="none",
                                 label="diverged before the target"))
    _reference_legend(axes[-1], references, "Marks")
    return figure


def accuracy_vs_time_figure(curves: pd.DataFrame, finished: pd.DataFrame, target: float | None) -> Figure:
    """Validation accuracy vs training time, one curve per cell, diverged cells dashed. Where each
    panel would hold one configuration, one panel with a colour per panel value."""
    categories = ""
    if one_configuration_per_panel(finished):
        categories, detail = panel_axes_title(finished), f"; {configuration_text(finished)} in every cell"
        labels = dict(zip(finished["panel"], category_labels(finished["panel"])))
        finished = finished.assign(**{COLOUR: finished["panel"].map(labels), "panel": ""})
        curves = curves.assign(**{COLOUR: curves["panel"].map(labels), "panel": ""})
    panels = _panels(finished)
    figure, axes = new_figure(len(panels))
    palette = batch_palette(finished[COLOUR])
    worker_levels = sorted(finished[WORKERS_AXIS].unique())
    markers = {workers: WORKER_MARKERS[index % len(WORKER_MARKERS)] for index, workers in enumerate(worker_levels)}
    any_diverged = False
    for ax, panel in zip(axes, panels):
        in_panel = curves[curves["panel"] == panel]
        if in_panel.empty:
            note_empty(ax, NO_FINISHED_CELLS if finished.empty else
                       "no validation accuracy (a regression study)" if curves.empty else NO_FINISHED_CELLS)
        for _, curve in in_panel.groupby("cell", sort=False):
            first = curve.iloc[0]
            diverged = first["status"] == "diverged"
            any_diverged |= diverged
            # A plain line: seaborn's lineplot costs some 30 ms a call, 5 minutes for 10,000 cells.
            ax.plot(curve["train_time_s"].to_numpy(), curve["val_accuracy"].to_numpy(), color=palette[first[COLOUR]],
                    marker=markers[first[WORKERS_AXIS]], linestyle="--" if diverged else "-")
        if target is not None:
            ax.axhline(target, color=REFERENCE_COLOR, ls=":", lw=1.5)
        ax.set_ylim(0, 1.02)
        ax.set_xlim(left=0)
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    _label(axes, min(len(panels), MAX_PANEL_COLUMNS), "Time in training steps (s)",
           "Validation accuracy (%)", panels)
    per = ("one curve per configuration, at each epoch the mean over its repeats"
           if REPEATS_COLUMN in finished.columns else "one curve per cell")
    figure_title(figure, "Validation accuracy vs training time",
           f"{per}; the clock counts training steps only, not validation, checkpoints or start-up"
           + (detail if categories else ""))
    if categories:
        # Only the values with a curve: a run that diverged before its first validation has none.
        drawn = [(label, color) for label, color in palette.items() if label in set(curves[COLOUR])]
        figure.legend(handles=[Line2D([], [], color=color, lw=2, label=str(label)) for label, color in drawn],
                      title=categories, loc="outside lower center",
                      ncols=min(len(drawn), max(2, int(figure.get_figwidth() / CATEGORY_LEGEND_ENTRY_WIDTH_IN))))
    else:
        batch_legend(figure, palette, finished)
    references: list[Line2D | Patch] = [
        Line2D([], [], color=REFERENCE_COLOR, marker=marker, ls="none", label=f"{workers} worker{'s' if workers != 1 else ''}")
        for workers, marker in markers.items()
    ]
    if any_diverged:
        references.append(Line2D([], [], color=REFERENCE_COLOR, ls="--", label="diverged run"))
    if target is not None:
        references.append(Line2D([], [], color=REFERENCE_COLOR, ls=":", label=f"target ({target:.0%})"))
    _reference_legend(axes[-1], references, "Workers / marks")
    return figure


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Draw a study's figures from runs.csv and epochs.csv.")
    parser.add_argument("runs_csv", type=Path)
    parser.add_argument("epochs_csv", type=Path)
    parser.add_argument("--out", type=Path, help="output directory (default: figures/ beside runs.csv)")
    parser.add_argument("--target", type=float, help="target validation accuracy (default: the runs' own)")
    args = parser.parse_args(argv)
    runs = pd.read_csv(args.runs_csv)
    epochs = pd.read_csv(args.epochs_csv)
    out_dir = args.out or args.runs_csv.parent / "figures"
    for outcome in make_all_figures(runs, epochs, out_dir, args.target):
        print(f"{out_dir / outcome.name}.png" if outcome.drawn else f"{outcome.name}: not drawn ({outcome.why})")


if __name__ == "__main__":
    main()
