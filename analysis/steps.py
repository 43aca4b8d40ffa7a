"""Where a study's tables become figures and the answer: one list of steps.

The workflow runs the steps that apply to a study in one job (workflow/rules/analysis.smk),
and after a failure it runs the same steps on the partial tables (workflow/rules/common.smk's
onerror), so a new figure is one entry here. A step proposes figures; only those the
study's data fill are saved (analysis/figures.py: finish_figure). The figures directory's
manifest, figures/figures.json, lists what was drawn, what was not and why, and what the
study varied; the report's captions and the answer are written from it.

    python -m analysis.steps STUDY_DIR [--steps NAME ...] [--study NAME]

This module is imported when the Snakefile is parsed: the plotting modules are imported only
when the steps run.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from analysis import (
    ANSWER_FIGURE_NAMES,
    ANSWER_FILES,
    ASSESSMENT_FIGURE_NAMES,
    FIGURE_NAMES,
    LAB1_FIGURE_NAMES,
    TIMING_PREFIX,
)
from analysis.tables import UPDATES_CSV, grid_axes_of

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from analysis.answer import StudyAnswer
    from analysis.figures import FigureOutcome

RUNS_CSV, EPOCHS_CSV = "runs.csv", "epochs.csv"
FIGURES_DIR = "figures"
MANIFEST = "figures.json"  # in FIGURES_DIR
ANSWER_HTML = "answer.html"
STUDY_FILES = (ANSWER_HTML, *ANSWER_FILES)  # what the analysis writes beside the figures


@dataclass(frozen=True)
class StudyTables:
    """What collect wrote for a study (analysis/collect.py), as the steps read it."""

    runs: pd.DataFrame
    epochs: pd.DataFrame
    updates: pd.DataFrame

    @classmethod
    def read(cls, study_dir: Path) -> StudyTables:
        updates = study_dir / UPDATES_CSV
        return cls(pd.read_csv(study_dir / RUNS_CSV), pd.read_csv(study_dir / EPOCHS_CSV),
                   pd.read_csv(updates) if updates.exists() and updates.stat().st_size > 0 else pd.DataFrame())


@dataclass(frozen=True)
class StudyTraits:
    """What decides which steps a study gets (from its plan, jobs/plan/grid.py)."""

    records_updates: bool  # its cells record (w, b) after each update: Lab 1
    time_budget: bool  # it sets time_budget_s: the course's assessment

    @classmethod
    def of(cls, tables: StudyTables) -> StudyTraits:
        """The traits as the tables show them, where there is no plan to ask."""
        budget = tables.runs.get("time_budget_s", pd.Series(dtype=float))
        return cls(records_updates=not tables.updates.empty, time_budget=bool(budget.notna().any()))


@dataclass(frozen=True)
class AnalysisStep:
    name: str
    figures: tuple[str, ...]  # the figures it proposes: figures/<name>.png and .svg, where drawn
    draw: Callable[[StudyTables, StudyAnswer], dict[str, Figure]]  # built, within figures.figure_style
    applies: Callable[[StudyTraits], bool] = lambda traits: True


def _study_figures(tables: StudyTables, answer: StudyAnswer) -> dict[str, Figure]:
    from analysis.figures import study_figures

    return study_figures(tables.runs, tables.epochs)


def _lab1_figures(tables: StudyTables, answer: StudyAnswer) -> dict[str, Figure]:
    from analysis.lab1_figures import lab1_figures

    return lab1_figures(tables.runs, tables.epochs, tables.updates)


def _assessment_figure(tables: StudyTables, answer: StudyAnswer) -> dict[str, Figure]:
    from analysis.assessment import assessment_figure

    return {"assessment": assessment_figure(tables.runs, tables.epochs)}


def _answer_figures(tables: StudyTables, answer: StudyAnswer) -> dict[str, Figure]:
    from analysis.answer_figures import answer_figures

    return answer_figures(answer, tables.epochs, tables.runs)


STEPS: tuple[AnalysisStep, ...] = (
    AnalysisStep("study", FIGURE_NAMES, _study_figures),
    AnalysisStep("lab1", LAB1_FIGURE_NAMES, _lab1_figures, applies=lambda traits: traits.records_updates),
    AnalysisStep("assessment", ASSESSMENT_FIGURE_NAMES, _assessment_figure, applies=lambda traits: traits.time_budget),
    AnalysisStep("answer", ANSWER_FIGURE_NAMES, _answer_figures),
)
STEPS_BY_NAME = {step.name: step for step in STEPS}


def steps_for(traits: StudyTraits) -> list[AnalysisStep]:
    return [step for step in STEPS if step.applies(traits)]


def what_varies(runs: pd.DataFrame) -> str:
    """One sentence naming the study's grid axes and their values, for the captions."""
    parts = []
    for axis in grid_axes_of(runs):
        if axis in runs.columns:
            values = list(dict.fromkeys(str(value) for value in runs[axis].dropna()))
            shown = ", ".join(values[:8]) + (f", ... ({len(values)} values)" if len(values) > 8 else "")
            parts.append(f"{axis} ({shown})")
    return "This study varies " + ("; ".join(parts) if parts else "nothing") + "."


def analyse_study(tables: StudyTables, study_dir: Path, study: str,
                  steps: Sequence[AnalysisStep]) -> tuple[dict[str, Any], dict[str, float]]:
    """Draw the steps' figures that the data fill, write the manifest and the answer; return the
    manifest and the seconds each phase took."""
    from analysis.answer import answer_study, write_answer_files
    from analysis.figures import figure_style, save_figures

    clock = time.perf_counter()
    seconds: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = seconds.get(name, 0.0) + now - clock
        clock = now

    answer = answer_study(tables.runs, study)
    lap("answer")
    figures_dir = study_dir / FIGURES_DIR
    figures_dir.mkdir(parents=True, exist_ok=True)
    outcomes: list[FigureOutcome] = []
    with figure_style():
        for step in steps:
            outcomes += save_figures(step.draw(tables, answer), figures_dir)
            lap(f"{step.name} figures")
    manifest = {"study": study, "varies": what_varies(tables.runs),
                "figures": [asdict(outcome) for outcome in outcomes]}
    (figures_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    write_answer_files(answer, study_dir, not_drawn_lines(manifest))
    lap("answer")
    return manifest, seconds


def not_drawn_lines(manifest: dict[str, Any]) -> list[str]:
    return [f"{figure['name']}: {figure['why']}" for figure in manifest["figures"] if not figure["drawn"]]


def rst_text(text: str) -> str:
    """Plain text as reStructuredText: no character of it is markup."""
    for character in "\\*`|_[]":
        text = text.replace(character, "\\" + character)
    return text


def figure_captions(figures_dir: Path, report_dir: Path) -> dict[str, str]:
    """Each drawn figure's caption in the report: what it shows (report_dir/<name>.rst), then
    what this study varied and the panels left out (the manifest); {} before it is written."""
    manifest = figures_dir / MANIFEST
    if not manifest.exists():
        return {}
    written = json.loads(manifest.read_text())
    captions = {}
    for figure in written["figures"]:
        if figure["drawn"]:
            shows = (report_dir / f"{figure['name']}.rst").read_text().strip()
            left_out = [f"Panels left out: {rst_text(line)}." for line in figure["left_out"]]
            captions[figure["name"]] = "\n\n".join([shows, rst_text(written["varies"]), *left_out])
    return captions


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Draw a study's figures and write its answer from its tables.")
    parser.add_argument("study_dir", type=Path, help="results/<study>, holding runs.csv and epochs.csv")
    parser.add_argument("--steps", nargs="+", choices=list(STEPS_BY_NAME),
                        help="the steps to run (default: those the tables call for)")
    parser.add_argument("--study", help="the study's name (default: the directory's name)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    tables = StudyTables.read(args.study_dir)
    read_s = time.perf_counter() - started
    steps = [STEPS_BY_NAME[name] for name in args.steps] if args.steps else steps_for(StudyTraits.of(tables))
    manifest, seconds = analyse_study(tables, args.study_dir, args.study or args.study_dir.name, steps)
    for figure in manifest["figures"]:
        print(f"{figure['name']}: " + ("drawn" if figure["drawn"] else f"not drawn ({figure['why']})"))
    for phase, phase_s in {"reading the tables": read_s, **seconds}.items():
        print(f"{TIMING_PREFIX}{phase} {phase_s:.2f} s")


if __name__ == "__main__":
    main()
