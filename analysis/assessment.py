"""The course's assessment as a figure: every cell's validation accuracy over training
wall time, the target and the time budget drawn, and each cell marked pass or fail.

    python -m analysis.assessment results/<study>/runs.csv results/<study>/epochs.csv \\
        --out results/<study>/figures

runs.csv's ``assessment`` column (analysis/collect.py) says pass or fail; a study gets
this figure when its config sets ``time_budget_s``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import PercentFormatter

from analysis.figures import REFERENCE_COLOR, WORKER_MARKERS, FigureOutcome, figure_style, save_figures

VERDICT_COLORS = {"pass": "#1b7837", "fail": "#b2182b"}
VERDICT_STYLES = {"pass": "-", "fail": "--"}


def assessment_figure(runs: pd.DataFrame, epochs: pd.DataFrame) -> Figure:
    judged = runs[runs["assessment"].isin(tuple(VERDICT_COLORS))]
    budget = pd.to_numeric(runs.get("time_budget_s"), errors="coerce").dropna()
    target = pd.to_numeric(judged.get("target_accuracy"), errors="coerce").dropna()
    patience = pd.to_numeric(judged.get("patience"), errors="coerce").dropna()
    figure = Figure(figsize=(9.0, 6.5), layout="constrained")
    ax = figure.subplots()
    handles = []
    for index, (cell, verdict) in enumerate(judged[["cell", "assessment"]].itertuples(index=False)):
        curve = epochs[epochs["cell"] == cell].sort_values("epoch")
        wall = pd.to_numeric(curve["wall_time_s"], errors="coerce")
        accuracy = pd.to_numeric(curve["val_accuracy"], errors="coerce")
        marker = WORKER_MARKERS[index % len(WORKER_MARKERS)]  # one per cell here
        ax.plot(wall, accuracy, color=VERDICT_COLORS[verdict], ls=VERDICT_STYLES[verdict], marker=marker, ms=5)
        handles.append(Line2D([], [], color=VERDICT_COLORS[verdict], ls=VERDICT_STYLES[verdict], marker=marker,
                              label=f"{verdict}: {cell}"))
    if judged.empty:
        ax.text(0.5, 0.5, "no finished cells to assess", transform=ax.transAxes, ha="center", va="center",
                color=REFERENCE_COLOR)
    if len(budget):
        ax.axvline(budget.iloc[0], color=REFERENCE_COLOR, ls="-.", lw=1.5)
        handles.append(Line2D([], [], color=REFERENCE_COLOR, ls="-.", label=f"time budget ({budget.iloc[0]:g} s)"))
    if len(target.unique()) == 1:
        ax.axhline(target.iloc[0], color=REFERENCE_COLOR, ls=":", lw=1.5)
        handles.append(Line2D([], [], color=REFERENCE_COLOR, ls=":", label=f"target ({target.iloc[0]:.0%})"))
    ax.set_xlabel("Training wall time (s; steps, validation and checkpoints, not start-up)")
    ax.set_ylabel("Validation accuracy (%)")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(left=0)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    passed = int((judged["assessment"] == "pass").sum())
    held = f", held {int(patience.iloc[0])} consecutive epochs" if len(patience.unique()) == 1 and patience.iloc[0] > 1 else ""
    figure.suptitle(f"Assessment: {passed} of {len(judged)} cells pass\n"
                    f"pass = validation accuracy at or above the target{held}, within the time budget",
                    fontsize="medium")
    if handles:
        figure.legend(handles=handles, loc="outside lower center", fontsize="small", title="Verdict: cell",
                      ncols=2 if len(handles) > 4 else 1)
    return figure


def make_assessment_figure(runs: pd.DataFrame, epochs: pd.DataFrame, out_dir: Path) -> list[FigureOutcome]:
    with figure_style():
        return save_figures({"assessment": assessment_figure(runs, epochs)}, Path(out_dir))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Draw the course's assessment from runs.csv and epochs.csv.")
    parser.add_argument("runs_csv", type=Path)
    parser.add_argument("epochs_csv", type=Path)
    parser.add_argument("--out", type=Path, help="output directory (default: figures/ beside runs.csv)")
    args = parser.parse_args(argv)
    out_dir = args.out or args.runs_csv.parent / "figures"
    for outcome in make_assessment_figure(pd.read_csv(args.runs_csv), pd.read_csv(args.epochs_csv), out_dir):
        print(f"{out_dir / outcome.name}.png" if outcome.drawn else f"{outcome.name}: not drawn ({outcome.why})")


if __name__ == "__main__":
    main()
