"""Where a study's tables become figures and the answer: one list of steps.

The workflow makes one rule per step (workflow/rules/analysis.smk), and after a failure it
runs the same steps on the partial tables (workflow/rules/common.smk's onerror), so a new
figure is one entry here. Each step runs as `python -m analysis.steps NAME STUDY_DIR`.

This module is imported when the Snakefile is parsed: the plotting modules are imported only
when a step runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis import ANSWER_FIGURE_NAMES, ANSWER_FILES, ASSESSMENT_FIGURE_NAMES, FIGURE_NAMES, LAB1_FIGURE_NAMES
from analysis.tables import UPDATES_CSV

RUNS_CSV, EPOCHS_CSV = "runs.csv", "epochs.csv"
FIGURES_DIR = "figures"
ANSWER_HTML = "answer.html"


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


@dataclass(frozen=True)
class AnalysisStep:
    name: str  # the rule's name and its log's
    figures: tuple[str, ...]  # figures/<name>.png and .svg
    run: Callable[[StudyTables, Path, str], None]  # (tables, study directory, study name)
    files: tuple[str, ...] = ()  # other files it writes in the study directory
    reads_updates: bool = False
    applies: Callable[[StudyTraits], bool] = lambda traits: True


def _draw_figures(tables: StudyTables, study_dir: Path, study: str) -> None:
    from analysis.figures import make_all_figures

    make_all_figures(tables.runs, tables.epochs, study_dir / FIGURES_DIR)


def _draw_lab1(tables: StudyTables, study_dir: Path, study: str) -> None:
    from analysis.lab1_figures import make_lab1_figures

    make_lab1_figures(tables.runs, tables.epochs, tables.updates, study_dir / FIGURES_DIR)


def _draw_assessment(tables: StudyTables, study_dir: Path, study: str) -> None:
    from analysis.assessment import make_assessment_figure

    make_assessment_figure(tables.runs, tables.epochs, study_dir / FIGURES_DIR)


def _answer(tables: StudyTables, study_dir: Path, study: str) -> None:
    from analysis.answer import write_answer
    from analysis.answer_figures import make_answer_figures

    answer = write_answer(tables.runs, study_dir, study)
    make_answer_figures(answer, tables.epochs, tables.runs, study_dir / FIGURES_DIR)


STEPS: tuple[AnalysisStep, ...] = (
    AnalysisStep("plot_study", FIGURE_NAMES, _draw_figures),
    AnalysisStep("plot_lab1", LAB1_FIGURE_NAMES, _draw_lab1, reads_updates=True,
                 applies=lambda traits: traits.records_updates),
    AnalysisStep("plot_assessment", ASSESSMENT_FIGURE_NAMES, _draw_assessment,
                 applies=lambda traits: traits.time_budget),
    AnalysisStep("answer_study", ANSWER_FIGURE_NAMES, _answer, files=(ANSWER_HTML, *ANSWER_FILES)),
)
STEPS_BY_NAME = {step.name: step for step in STEPS}


def steps_for(traits: StudyTraits) -> list[AnalysisStep]:
    return [step for step in STEPS if step.applies(traits)]


def figure_names(traits: StudyTraits) -> list[str]:
    return [name for step in steps_for(traits) for name in step.figures]


def run_steps(steps: Sequence[AnalysisStep], tables: StudyTables, study_dir: Path, study: str) -> None:
    for step in steps:
        step.run(tables, study_dir, study)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run one analysis step on a study's tables.")
    parser.add_argument("step", choices=list(STEPS_BY_NAME))
    parser.add_argument("study_dir", type=Path, help="results/<study>, holding runs.csv and epochs.csv")
    parser.add_argument("--study", help="the study's name (default: the directory's name)")
    args = parser.parse_args(argv)
    STEPS_BY_NAME[args.step].run(StudyTables.read(args.study_dir), args.study_dir, args.study or args.study_dir.name)


if __name__ == "__main__":
    main()
