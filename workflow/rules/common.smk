import json
import shlex
import sys
from pathlib import Path

from analysis.steps import FIGURES_DIR, STUDY_FILES, StudyTraits, steps_for
from analysis.steps import figure_captions as analysis_figure_captions
from jobs.cell import CellDir
from jobs.launch.active_runs import RunMarker, studies_left_alone
from jobs.plan.config import ConfigError
from jobs.plan.grid import CELL_ID_PATTERN, make_plan

try:
    PLAN = make_plan(config)
except ConfigError as error:
    # One line naming the key, the value and what is allowed; nothing has started.
    sys.exit(str(error))

RESULTS = PLAN.results_dir
# Each train_cell job takes one of these (train.smk): however many cores the profile
# gives, the cells waiting beyond the limit are not started at all, so they hold no
# process on the login node and touch no file. `--resources cells_in_flight=N` overrides.
workflow.global_resources.setdefault("cells_in_flight", PLAN.launcher.max_cells_in_flight)

# Studies another live snakemake run is working on (jobs/launch/active_runs.py): said in one
# line each, and left alone, so neither run reports the other's cells as failed.
BUSY_STUDIES = studies_left_alone(Path(RESULTS), list(PLAN.studies))
OUR_STUDIES = [study for study in PLAN.studies if study not in BUSY_STUDIES]
RUN_MARKER = {}


def find_damaged_cells():
    """A finished cell whose summary or metrics cannot be read is not finished: {(study, cell):
    where its summary is to be kept}. Parsing only reads: the rule set_aside_damaged_summary
    (train.smk) renames the summary when a real run executes, so a preview (-n), --summary or
    --report changes nothing on disk and still shows the cell running again."""
    damaged = {}
    for study in OUR_STUDIES:
        for cell in PLAN.studies[study].cells:
            cell_dir = CellDir(Path(RESULTS) / study / "cells" / cell)
            problem = cell_dir.damage()
            if problem is None:
                continue
            damaged[(study, cell)] = cell_dir.next_damaged_summary()
            print(f"{study}/{cell}: damaged ({problem}); its summary is kept as "
                  f"{damaged[(study, cell)].name} and the cell runs again", file=sys.stderr)
    return damaged


DAMAGED_CELLS = find_damaged_cells()
# Shell rules use the interpreter Snakemake runs in (the project's .venv), whether or
# not that environment is activated.
PYTHON = sys.executable


wildcard_constraints:
    study="|".join(PLAN.studies),
    cell=CELL_ID_PATTERN,


def get_final_outputs():
    outputs = []
    for study in OUR_STUDIES:
        # Every cell is a target itself: a cell whose summary.json went missing runs
        # again even though the study's table and figures still exist.
        outputs += cell_summaries(study)
        outputs.append(f"{RESULTS}/{study}/runs.csv")
        outputs.append(f"{RESULTS}/{study}/{FIGURES_DIR}")
        outputs += [f"{RESULTS}/{study}/{name}" for name in STUDY_FILES]
    return outputs


def study_traits(study):
    spec = PLAN.studies[study]
    return StudyTraits(records_updates=any(params.record_updates for params in spec.cells.values()),
                       time_budget=spec.time_budget_s is not None)


def get_analysis_steps(wildcards):
    return [step.name for step in steps_for(study_traits(wildcards.study))]


def cell_summaries(study):
    return [f"{RESULTS}/{study}/cells/{cell}/summary.json" for cell in PLAN.studies[study].cells]


def get_cell_ids(wildcards):
    return list(PLAN.studies[wildcards.study].cells)


def study_analysis(study):
    from analysis.collect import StudyAnalysis

    spec = PLAN.studies[study]
    return StudyAnalysis(spec.scaling, spec.time_budget_s, PLAN.launcher.hardware())


def get_analysis_args(wildcards):
    analysis = study_analysis(wildcards.study)
    budget = [] if analysis.time_budget_s is None else ["--time-budget-s", str(analysis.time_budget_s)]
    hardware = ["--hardware", shlex.quote(json.dumps(analysis.hardware, sort_keys=True))]
    return " ".join(["--scaling", analysis.scaling, *budget, *hardware])


def figure_captions(figures_dir):
    """Each drawn figure's caption in the report (analysis/steps.py), read when the report is made."""
    return analysis_figure_captions(Path(figures_dir), Path(workflow.basedir) / "report")


def get_cell_summaries(wildcards):
    return cell_summaries(wildcards.study)


def get_cell(wildcards):
    study = PLAN.studies[wildcards.study]
    if wildcards.cell not in study.cells:
        raise ValueError(f"study {wildcards.study} has no cell {wildcards.cell}; cells: {', '.join(study.cells)}")
    params = study.cells[wildcards.cell]
    # measured_with is here so that Snakemake reruns a cell when the threads or the placement change.
    cell = {"params": params.as_rule_param(), "grid_axes": list(study.axes),
            "measured_with": PLAN.launcher.for_partition(params.partition).measured_with(params.gpus)}
    return cell


def keep_damaged_summary(kept, log):
    CellDir(kept.parent).set_aside_damaged_summary(kept)
    log.write_text(f"damaged summary kept as {kept}\n")


def get_damaged_summary(wildcards):
    """A damaged cell's train job waits for its summary to be set aside, so it runs again."""
    kept = DAMAGED_CELLS.get((wildcards.study, wildcards.cell))
    return [str(kept)] if kept is not None else []


def mark_this_run():
    """A run that executes says which studies it works on, for a run started meanwhile."""
    RUN_MARKER["marker"] = RunMarker(Path(RESULTS), OUR_STUDIES)


def unmark_this_run():
    if "marker" in RUN_MARKER:
        RUN_MARKER.pop("marker").withdraw()


def print_answers():
    """The end of a run: each study's answer (analysis/answer.py's answer.md), where it is as new
    as the study's table (after a failure, runs.csv is rewritten with the partial results)."""
    for study in OUR_STUDIES:
        answer, runs = Path(RESULTS) / study / "answer.md", Path(RESULTS) / study / "runs.csv"
        if answer.exists() and runs.exists() and answer.stat().st_mtime >= runs.stat().st_mtime:
            print(f"\n{answer.read_text()}", flush=True)


def collect_partial_results():
    """After a failure: tables and figures of what did finish, failed cells marked as such.
    The next run, once the failed cells are done, replaces them."""
    from analysis.collect import write_tables
    from analysis.steps import StudyTables, analyse_study

    for study in OUR_STUDIES:
        spec, study_dir = PLAN.studies[study], Path(RESULTS) / study
        if not (study_dir / "cells").is_dir():
            continue
        tables = write_tables(study_dir, study_dir / "runs.csv", study_dir / "epochs.csv", list(spec.cells),
                              analysis=study_analysis(study))
        analyse_study(StudyTables(tables.runs, tables.epochs, tables.updates), study_dir, study,
                      steps_for(study_traits(study)))
        counts = tables.runs["status"].value_counts().to_dict()
        print(f"{study}: partial results in {study_dir} ({counts}); run the same command again to retry "
              "the cells that did not finish", file=sys.stderr)


def get_dataset_files(wildcards):
    params = PLAN.studies[wildcards.study].cells[wildcards.cell]
    if params.dataset == "fashion_mnist":
        return FASHION_MNIST_FILES
    return []
