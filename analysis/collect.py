"""Read every grid cell of a study into two tidy tables.

    python -m analysis.collect results/<study> \\
        --runs results/<study>/runs.csv --epochs results/<study>/epochs.csv

runs: one row per cell directory (results/<study>/cells/<cell>/) with its grid
values, parameters, status and derived metrics. epochs: one row per finished
epoch per cell. A cell is "complete" or "diverged" as its summary.json says,
"failed" without summary.json (crashed or still running) and "broken" when
summary.json or metrics.jsonl is unreadable, corrupt or missing; the reason is
in the ``problem`` column. Nothing in one cell stops the others from being read.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import TIMING_PREFIX
from analysis.metrics import (
    REPLICATE_AXES,
    across_replicates,
    epoch_at_loss_or_accuracy_target,
    pooled_noise_scale,
    speedup_and_efficiency,
    steady_state_throughput,
    steady_step_time,
)
from analysis.tables import (
    DEFAULT_GRID_AXES,
    EPOCH_FIELDS,
    GRID_AXES_COLUMN,
    LEADING_COLUMNS,
    RESULT_COLUMNS,
    STARTUP_EPOCH_COLUMN,
    TIME_SPLIT_COLUMNS,
    UPDATE_COLUMNS,
    UPDATES_CSV,
    UPDATES_FIELD,
)
from jobs.cell import FINISHED_STATUSES, CellDir, MetricsLog


@dataclass
class Cell:
    """One grid cell as found on disk."""

    name: str
    summary: dict[str, Any] | None
    log: MetricsLog
    problem: str | None
    accounting: dict[str, Any] | None = None  # Slurm's account of the summary's job (accounting.json)

    @property
    def status(self) -> str:
        if self.problem is not None:
            return "broken"
        if self.summary is None:
            return "failed"
        return str(self.summary["status"])

    @property
    def params(self) -> dict[str, Any]:
        if self.summary is not None and isinstance(self.summary.get("params"), dict):
            return self.summary["params"]
        for meta in reversed(self.log.metas):
            if isinstance(meta.get("params"), dict):
                return meta["params"]
        return {}

    @property
    def last_meta(self) -> dict[str, Any]:
        return self.log.metas[-1] if self.log.metas else {}


def read_cell(cell_dir: Path) -> Cell:
    cell = CellDir(cell_dir)
    summary, problem = cell.read_summary()
    log = cell.read_metrics()
    never_started = summary is None and problem is None and not cell.metrics.exists()
    if never_started:
        return Cell(name=cell.name, summary=None, log=MetricsLog(), problem=None)
    problem = problem or log.problem
    if problem is None and summary is not None and not log.epochs:
        problem = "summary.json exists but metrics.jsonl has no epoch records"
    accounting = cell.read_accounting(summary.get("job_id")) if summary is not None else None
    return Cell(name=cell.name, summary=summary, log=log, problem=problem, accounting=accounting)


def study_grid_axes(cells: Iterable[Cell]) -> list[str]:
    """Batch size and workers first, then every other axis any summary declares."""
    axes = list(DEFAULT_GRID_AXES)
    for cell in cells:
        declared = (cell.summary or {}).get("grid_axes") or []
        axes.extend(axis for axis in declared if isinstance(axis, str) and axis not in axes)
    return axes


def _scalar(value: Any) -> Any:
    """Lists and dicts in params become JSON text so they fit in one CSV cell."""
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return value


def _first_known(*values: Any) -> Any:
    for value in values:
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            return value
    return None


def _product(left: Any, right: Any) -> Any:
    try:
        return left * right if left is not None and right is not None else None
    except TypeError:
        return None


def _world_size(cell: Cell) -> Any:
    from_epochs = [epoch.get("world_size") for epoch in reversed(cell.log.epochs)]
    summary = cell.summary or {}
    return _first_known(*from_epochs, cell.last_meta.get("world_size"), summary.get("world_size"))


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _sum_or_none(numbers: np.ndarray) -> float | None:
    """The sum over epochs, or None when any epoch lacks the value (records of an older version)."""
    return float(numbers.sum()) if len(numbers) and not np.isnan(numbers).any() else None


def _last_known(numbers: np.ndarray) -> float | None:
    known = numbers[~np.isnan(numbers)]
    return float(known[-1]) if len(known) else None


def numeric_field(epochs: list[dict[str, Any]], name: str) -> np.ndarray:
    """One numeric field over a cell's epochs, NaN where an epoch lacks it or holds no number.
    (numpy directly: pandas per field and cell made the table of 10,000 cells take minutes.)"""
    values = [epoch.get(name) for epoch in epochs]
    try:
        return np.array(values, dtype=float)
    except (TypeError, ValueError):
        return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=float)


def run_row(cell: Cell, grid_axes: list[str], study: str) -> dict[str, Any]:
    """The runs-table row of one cell (speed-up and efficiency are added later)."""
    summary = cell.summary or {}
    params = cell.params
    records = cell.log.epochs

    def column(name: str) -> np.ndarray:
        return numeric_field(records, name)

    startup = [bool(epoch.get(STARTUP_EPOCH_COLUMN)) for epoch in records]
    accuracies = column("val_accuracy")
    losses = column("val_loss")
    samples_per_s = column("samples_per_s")
    samples_per_s = np.where(np.isnan(samples_per_s), column("samples") / column("epoch_time_s"), samples_per_s)
    throughput = steady_state_throughput(samples_per_s.tolist(), startup=startup)
    # Every "to target" number is read at the epoch the target is known to be held (time_to_accuracy's rule).
    at_target = epoch_at_loss_or_accuracy_target(accuracies.tolist(), losses.tolist(),
                                                 params.get("target_accuracy"), params.get("target_loss"),
                                                 params.get("patience"))

    def to_target(clock: np.ndarray) -> float | None:
        value = float(clock[at_target]) if at_target is not None else math.nan
        return value if math.isfinite(value) else None

    steps = column("steps")
    time_split = {column_name: _sum_or_none(column(part)) for part, column_name in TIME_SPLIT_COLUMNS.items()}
    # Time to target = steps to target (statistical efficiency) x time per step (hardware efficiency).
    steps_to_target = to_target(np.cumsum(steps))
    samples_to_target = to_target(np.cumsum(column("samples")))
    time_to_target_s = to_target(column("train_time_s"))
    noise_until = at_target + 1 if at_target is not None else len(records)
    world_size = _world_size(cell)
    workers = _first_known(world_size, params.get("gpus"))
    batch_size = params.get("batch_size")
    hosts = cell.last_meta.get("hosts")

    row: dict[str, Any] = {
        "cell": cell.name,
        "study": summary.get("study") or study,
        "status": cell.status,
        "stop_reason": summary.get("stop_reason"),
    }
    row.update({axis: _scalar(params.get(axis)) for axis in grid_axes})
    row.update(
        {
            "world_size": world_size,
            "nodes": len(set(hosts)) if isinstance(hosts, list) and hosts else None,
            "global_batch": _product(batch_size, workers),
            "epochs_run": _first_known(summary.get("epochs_run"), len(records)),
            "throughput": throughput.mean,
            "throughput_ci95": throughput.ci95,
            "time_to_target_s": time_to_target_s,
            "steps_to_target": _as_int(steps_to_target),
            "samples_to_target": _as_int(samples_to_target),
            "time_per_step_s": time_to_target_s / steps_to_target if time_to_target_s and steps_to_target else None,
            "step_time_s": steady_step_time(column("steps_s").tolist(), steps.tolist(), startup=startup),
            "noise_scale": pooled_noise_scale(column("grad_sq_norm")[:noise_until].tolist(),
                                              column("grad_trace")[:noise_until].tolist()),
            "wall_time_to_target_s": to_target(column("wall_time_s")),
            "best_val_accuracy": _first_known(np.nanmax(accuracies) if (~np.isnan(accuracies)).any() else None,
                                              summary.get("best_val_accuracy")),
            "final_val_accuracy": _finite_or_none(accuracies[-1]) if len(accuracies) else None,
            "best_val_loss": _finite_or_none(float(np.nanmin(losses))) if np.isfinite(losses).any() else None,
            "train_time_s": _last_known(column("train_time_s")),
            "wall_time_training_s": _last_known(column("wall_time_s")),
            **time_split,
            "speedup": None,
            "efficiency": None,
            "startup_s": _first_known(summary.get("startup_s"), cell.last_meta.get("startup_s")),
            "queue_time_s": summary.get("queue_time_s"),
            "gradient_bytes": cell.last_meta.get("gradient_bytes"),
            "flops_per_sample": cell.last_meta.get("flops_per_sample"),
            "flop_rate": _product(throughput.mean, cell.last_meta.get("flops_per_sample")),
            "workers_per_node": cell.last_meta.get("local_size"),
            "oversubscription": oversubscription(cell.last_meta),
            "threads_per_worker": cell.last_meta.get("threads_per_worker"),
            "cpus": (cell.last_meta.get("machine") or {}).get("cpus"),
            "device": cell.last_meta.get("device"),
            # What the workers used: weighted by epoch time, or the largest (jobs/train/usage.py).
            "cpu_efficiency": _time_weighted_mean(column("cpu_efficiency"), column("epoch_time_s")),
            "max_rss_gb": _largest(column("max_rss_gb")),
            "gpu_utilization": _time_weighted_mean(column("gpu_utilization"), column("epoch_time_s")),
            "gpu_memory_gb": _largest(column("gpu_memory_gb")),
            # Against what the job asked for (the meta record): memory per task, the time limit.
            "memory_used_fraction": _ratio(_largest(column("max_rss_gb")), cell.last_meta.get("memory_per_task_gb")),
            "time_limit_used_fraction": _ratio(summary.get("longest_attempt_s"), cell.last_meta.get("time_limit_s")),
            "usage_source": "job",
            "restarts": _first_known(summary.get("restarts"), len(cell.log.metas) - 1 if cell.log.metas else None),
            "job_id": _first_known(summary.get("job_id"), cell.last_meta.get("job_id")),
            "problem": cell.problem,
        }
    )
    if cell.accounting is not None:
        row.update(accounted_usage(cell.accounting, cell.last_meta.get("memory_per_task_gb"),
                                   row["time_limit_used_fraction"]))
    for name, value in params.items():
        if name in grid_axes:
            continue
        # A parameter named like a result column keeps both, the parameter prefixed.
        row[f"param_{name}" if name in row or name == GRID_AXES_COLUMN else name] = _scalar(value)
    row[GRID_AXES_COLUMN] = " ".join(grid_axes)
    return row


def accounted_usage(accounting: dict[str, Any], memory_per_task_gb: Any,
                    own_time_limit_fraction: float | None = None) -> dict[str, Any]:
    """The usage columns as Slurm's accounting gives them for the job's last attempt
    (jobs/launch/accounting.py), where it recorded them: they replace the job's own readings, which
    cover the epochs only. The time limit's share is the larger of sacct's and the job's own longest
    attempt: sacct shows the last attempt of a requeued job only."""
    def number(name: str) -> float | None:
        value = accounting.get(name)
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None

    rss, gpu_memory = number("max_rss_bytes"), number("gpu_memory_bytes")
    found = {
        "cpu_efficiency": number("cpu_efficiency"),
        "max_rss_gb": rss / 2**30 if rss is not None else None,
        "memory_used_fraction": _ratio(rss / 2**30 if rss is not None else None, memory_per_task_gb),
        "time_limit_used_fraction": max((value for value in (number("time_limit_used_fraction"),
                                                             own_time_limit_fraction) if value is not None),
                                        default=None),
        "gpu_utilization": number("gpu_utilization"),
        "gpu_memory_gb": gpu_memory / 2**30 if gpu_memory is not None else None,
    }
    return {**{name: value for name, value in found.items() if value is not None}, "usage_source": "sacct"}


def _time_weighted_mean(values: np.ndarray, seconds: np.ndarray) -> float | None:
    known = np.isfinite(values) & np.isfinite(seconds) & (seconds > 0)
    return float(np.average(values[known], weights=seconds[known])) if known.any() else None


def _ratio(used: Any, given: Any) -> float | None:
    return float(used) / float(given) if isinstance(used, (int, float)) and isinstance(given, (int, float)) \
        and given > 0 else None


def _largest(values: np.ndarray) -> float | None:
    return float(np.nanmax(values)) if np.isfinite(values).any() else None


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _as_int(value: float | None) -> int | None:
    return int(value) if value is not None and math.isfinite(value) else None


def oversubscription(meta: Mapping[str, Any]) -> float | None:
    """How many times over a CPU cell's workers on a node asked for its CPUs (workers x threads /
    CPUs given, at least 1): the factor by which sharing cores slows their compute. 1 on a GPU."""
    device = str(meta.get("device") or "")
    if device.startswith("cuda"):
        return 1.0
    cpus = (meta.get("machine") or {}).get("cpus")
    workers, threads = meta.get("local_size"), meta.get("threads_per_worker")
    if not (cpus and workers and threads):
        return None
    return max(1.0, workers * threads / cpus)


def epoch_column(name: str, grid_axes: Sequence[str]) -> str:
    """An epoch's field named like a grid axis (lr: the epoch's scheduled lr beside the grid's
    base lr) keeps both, the field prefixed."""
    return f"epoch_{name}" if name in grid_axes else name


def epoch_rows(cell: Cell, grid_axes: list[str]) -> list[dict[str, Any]]:
    grid_values = {axis: _scalar(cell.params.get(axis)) for axis in grid_axes}
    return [
        {
            "cell": cell.name,
            **grid_values,
            **{epoch_column(name, grid_axes): value for name, value in record.items()
               if name not in ("type", UPDATES_FIELD)},
        }
        for record in cell.log.epochs
    ]


def update_rows(cell: Cell, grid_axes: list[str]) -> list[dict[str, Any]]:
    """One row per recorded update, numbered from 1 over the whole run: (w, b) after it."""
    grid_values = {axis: _scalar(cell.params.get(axis)) for axis in grid_axes}
    rows, update = [], 0
    for record in cell.log.epochs:
        steps = record.get("steps") or 0
        recorded = record.get(UPDATES_FIELD) or []
        first = update + steps - len(recorded)  # updates are numbered even where none were recorded
        for offset, (weight, bias) in enumerate(recorded, start=1):
            rows.append({"cell": cell.name, **grid_values, "epoch": record["epoch"], "update": first + offset,
                         "weight": weight, "bias": bias})
        update += steps
    return rows


@dataclass
class Tables:
    runs: pd.DataFrame  # one row per cell
    epochs: pd.DataFrame  # one row per epoch of each cell
    updates: pd.DataFrame  # one row per recorded update (Lab 1's (w, b)); empty for most studies


@dataclass(frozen=True)
class StudyAnalysis:
    """What the study's config says about reading its cells (jobs/plan/grid.py's Study)."""

    scaling: str = "weak"  # which batch the efficiency baseline shares: per-worker (weak) or global (strong)
    time_budget_s: float | None = None  # the course's assessment: target held within this training wall time
    # What the profile says of the hardware, each partition resolved (jobs/plan/params.py
    # LauncherSettings.hardware): its name, GPUs per node (Slurm only) and price per GPU-hour.
    hardware: dict[str, Any] = field(default_factory=dict)

    def partition_columns(self, named: Sequence[Any]) -> pd.DataFrame:
        """partition, gpus_per_node and price_per_gpu_hour of cells whose `partition` parameter is ``named``."""
        listed = self.hardware.get("partitions") or {}
        default = self.hardware.get("default") or {"partition": None, "gpus_per_node": None, "price_per_gpu_hour": None}
        rows = []
        for value in named:
            name = value if isinstance(value, str) and value else None
            rows.append(listed.get(name) or {**default, **({"partition": name} if name else {})})
        return pd.DataFrame(rows, columns=["partition", "gpus_per_node", "price_per_gpu_hour"])


def collect_study(study_dir: Path, cells: Sequence[str] | None = None,
                  analysis: StudyAnalysis = StudyAnalysis()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, epochs): see collect_tables."""
    tables = collect_tables(study_dir, cells, analysis)
    return tables.runs, tables.epochs


def assessment(runs: pd.DataFrame, time_budget_s: float | None) -> pd.Series:
    """pass: the cell held its target within the budget of training wall time (validation
    included, start-up not); fail: it finished otherwise; None: unfinished, or no budget."""
    if time_budget_s is None or runs.empty:
        return pd.Series(None, index=runs.index, dtype=object)
    reached = pd.to_numeric(runs["wall_time_to_target_s"], errors="coerce")
    verdict = np.where(reached <= time_budget_s, "pass", "fail")
    return pd.Series(verdict, index=runs.index, dtype=object).where(runs["status"].isin(FINISHED_STATUSES), None)


def collect_tables(study_dir: Path, cells: Sequence[str] | None = None,
                   analysis: StudyAnalysis = StudyAnalysis()) -> Tables:
    """The tables of the given cells of the study (default: every directory under
    ``study_dir``/cells), sorted by grid values. A cell never started counts as failed."""
    cells_dir = Path(study_dir) / "cells"
    if cells is not None:
        cell_dirs = [cells_dir / cell for cell in sorted(cells)]
    else:
        cell_dirs = sorted(path for path in cells_dir.iterdir() if path.is_dir()) if cells_dir.is_dir() else []
    found = [read_cell(cell_dir) for cell_dir in cell_dirs]
    grid_axes = study_grid_axes(found)
    study = Path(study_dir).name

    run_columns = [*LEADING_COLUMNS, *grid_axes, *RESULT_COLUMNS]
    run_rows = [run_row(cell, grid_axes, study) for cell in found]
    runs = _with_integer_columns(pd.DataFrame(run_rows), run_rows)
    runs = runs.reindex(columns=_ordered(run_columns, runs.columns, last=GRID_AXES_COLUMN))
    hardware = analysis.partition_columns(runs["partition"].tolist() if "partition" in runs else [None] * len(runs))
    for column in hardware.columns:
        runs[column] = hardware[column].to_numpy()
    runs["scaling"] = analysis.scaling
    runs["time_budget_s"] = analysis.time_budget_s
    runs["assessment"] = assessment(runs, analysis.time_budget_s)
    if len(runs):
        scaling = speedup_and_efficiency(runs, grid_axes, scaling=analysis.scaling)
        runs["speedup"] = scaling["speedup"]
        runs["efficiency"] = scaling["efficiency"]
        runs = with_replicate_columns(runs, grid_axes)
        runs = runs[[*(c for c in runs.columns if c != GRID_AXES_COLUMN), GRID_AXES_COLUMN]]
    runs = _sort_by_grid(runs, grid_axes)

    epoch_columns = ["cell", *grid_axes, *(epoch_column(name, grid_axes) for name in EPOCH_FIELDS),
                     STARTUP_EPOCH_COLUMN]
    all_epoch_rows = [row for cell in found for row in epoch_rows(cell, grid_axes)]
    epochs = _with_integer_columns(pd.DataFrame(all_epoch_rows), all_epoch_rows)
    epochs = epochs.reindex(columns=_ordered(epoch_columns, epochs.columns))
    epochs = _sort_by_grid(epochs, grid_axes, then=["epoch"])
    runs.attrs["grid_axes"] = grid_axes
    epochs.attrs["grid_axes"] = grid_axes
    updates = pd.DataFrame([row for cell in found for row in update_rows(cell, grid_axes)],
                           columns=["cell", *grid_axes, *UPDATE_COLUMNS])
    return Tables(runs, epochs, _sort_by_grid(updates, grid_axes, then=["update"]))


OVER_REPEATS = ("throughput", "time_to_target_s", "efficiency")
"""Results averaged over the replicate axes: <name>_over_repeats and <name>_over_repeats_ci95."""


def with_replicate_columns(runs: pd.DataFrame, grid_axes: list[str]) -> pd.DataFrame:
    """When the grid has a replicate axis (repeat, seed), each row also gets the mean over its
    replicates (same values of every other axis, finished runs only) with a Student's t
    interval, and ``repeats``, how many finished replicates there are."""
    replicate_axes = [axis for axis in grid_axes if axis in REPLICATE_AXES]
    if not replicate_axes:
        return runs
    keys = [axis for axis in grid_axes if axis not in replicate_axes]
    finished = runs["status"].isin(FINISHED_STATUSES)
    runs = runs.copy()
    runs["repeats"] = pd.Series(pd.NA, index=runs.index, dtype="Int64")
    for name in OVER_REPEATS:
        runs[f"{name}_over_repeats"] = np.nan
        runs[f"{name}_over_repeats_ci95"] = np.nan
    for _, group in runs.groupby(keys, dropna=False, sort=False):
        done = group[finished[group.index]]
        runs.loc[group.index, "repeats"] = len(done)
        for name in OVER_REPEATS:
            summary = across_replicates(pd.to_numeric(done[name], errors="coerce").tolist())
            runs.loc[group.index, f"{name}_over_repeats"] = summary.mean
            runs.loc[group.index, f"{name}_over_repeats_ci95"] = summary.ci95
    return runs


def _with_integer_columns(frame: pd.DataFrame, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Columns whose known values are all integers stay integers (nullable), not 64.0."""
    for column in frame.columns:
        known = [row[column] for row in rows if row.get(column) is not None]
        if known and all(_is_integer(value) for value in known):
            frame[column] = frame[column].astype("Int64")
    return frame


def _ordered(first: list[str], present: Iterable[str], last: str | None = None) -> list[str]:
    """``first`` then any other present column in its order, ``last`` at the end."""
    rest = [column for column in present if column not in first and column != last]
    return [*first, *rest, *([last] if last else [])]


def _sort_by_grid(frame: pd.DataFrame, grid_axes: list[str], then: list[str] | None = None) -> pd.DataFrame:
    keys = [axis for axis in grid_axes if frame[axis].notna().any()] + ["cell"] + (then or [])
    try:
        return frame.sort_values(keys, na_position="last", kind="stable", ignore_index=True)
    except TypeError:  # an axis mixing numbers and text cannot be ordered
        return frame.sort_values(["cell", *(then or [])], kind="stable", ignore_index=True)


def write_tables(study_dir: Path, runs_csv: Path, epochs_csv: Path, cells: Sequence[str] | None = None,
                 updates_csv: Path | None = None, analysis: StudyAnalysis = StudyAnalysis()) -> Tables:
    """runs.csv, epochs.csv and updates.csv (beside epochs.csv unless given; only a header
    when no cell records its updates)."""
    tables = collect_tables(study_dir, cells, analysis)
    updates_csv = updates_csv or epochs_csv.with_name(UPDATES_CSV)
    for path, table in ((runs_csv, tables.runs), (epochs_csv, tables.epochs), (updates_csv, tables.updates)):
        path.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(path, index=False)
    return tables


def _summarize(runs: pd.DataFrame) -> str:
    counts: Mapping[str, int] = runs["status"].value_counts().to_dict() if len(runs) else {}
    parts = [f"{counts.get(status, 0)} {status}" for status in (*FINISHED_STATUSES, "failed", "broken")]
    return f"{len(runs)} cells: " + ", ".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Collect a study's cell logs into runs.csv and epochs.csv.")
    parser.add_argument("study_dir", type=Path, help="results/<study>, holding cells/<cell>/")
    parser.add_argument("--runs", type=Path, help="output CSV, one row per cell (default: <study_dir>/runs.csv)")
    parser.add_argument("--epochs", type=Path, help="output CSV, one row per epoch (default: <study_dir>/epochs.csv)")
    parser.add_argument("--updates", type=Path,
                        help="output CSV, (w, b) after each recorded update (default: updates.csv beside --epochs)")
    parser.add_argument("--cells", nargs="+", help="the study's cells (default: every directory under cells/)")
    parser.add_argument("--scaling", choices=("weak", "strong"), default="weak",
                        help="weak: efficiency at a fixed per-worker batch; strong: at a fixed global batch")
    parser.add_argument("--hardware", type=json.loads, default={},
                        help="JSON: each partition's partition, gpus_per_node and price_per_gpu_hour under "
                             "\"default\" and \"partitions\" ({name: ...}), as LauncherSettings.hardware resolves them")
    parser.add_argument("--time-budget-s", type=float,
                        help="the assessment's budget: pass when the target is held within it (training wall time)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    runs = write_tables(
        args.study_dir,
        args.runs or args.study_dir / "runs.csv",
        args.epochs or args.study_dir / "epochs.csv",
        args.cells,
        args.updates,
        StudyAnalysis(args.scaling, args.time_budget_s, args.hardware),
    ).runs
    print(_summarize(runs))
    for cell, problem in runs.loc[runs["problem"].notna(), ["cell", "problem"]].itertuples(index=False):
        print(f"  {cell}: {problem}")
    print(f"{TIMING_PREFIX}collect {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
