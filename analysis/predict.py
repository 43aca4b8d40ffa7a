"""`scaling-predict MEASUREMENTS.csv`: the answer's step-time model (analysis/scaling_model.py),
fed any table of measurements: a few runs of your own, a vendor's or a paper's throughput
table, or a study's runs.csv as it is.

    scaling-predict measured.csv --workers 16 32 64 --per-worker-batch 64 --workers-per-node 8 --out predicted.csv

Columns (one row per measured configuration): `workers`, `per_worker_batch` (samples per
worker per optimizer step), `time_per_step_s` or `throughput` (samples/s of all workers
together), `gradient_bytes`, and optionally `workers_per_node` (default: all on one node) and
`oversubscription` (worker processes x threads per CPU, default 1). Rows that also give `global_batch` and `steps_to_target` feed the
critical-batch fit. Other columns are ignored.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.critical_batch import CriticalBatchFit, fit_critical_batch
from analysis.scaling_model import (
    CANDIDATE_COLUMNS,
    NOISE_PRIOR,
    NOISE_PRIOR_WEIGHT,
    STEP_COLUMNS,
    StepTimeModel,
    fit_step_time,
    predict,
)

REQUIRED = ("workers", "per_worker_batch", "gradient_bytes")
TIMES = ("time_per_step_s", "throughput")
POSITIVE = ("workers", "per_worker_batch", "workers_per_node", "time_per_step_s", "throughput", "oversubscription")
MIN_ROWS = 2  # below this the fit has nothing to tell compute from communication with, not even a residual
OUTPUT_COLUMNS = ("workers", "per_worker_batch", "workers_per_node", "global_batch", "time_per_step_s", "time_per_step_low_s",
                  "time_per_step_high_s", "throughput", "efficiency")


class BadMeasurements(ValueError):
    """One line naming the file, the row and the column, and what is allowed."""


def is_runs_table(table: pd.DataFrame) -> bool:
    return {"cell", "status", "step_time_s"} <= set(table.columns)


def measurements_of(table: pd.DataFrame, source: str) -> pd.DataFrame:
    """The step-time observations of a measurements table (or a study's runs.csv), checked: each
    problem is one line naming the row (as numbered in the file, the header being row 1) and column."""
    if is_runs_table(table):
        from analysis.answer import step_rows

        rows = step_rows(table)
        if "steps_to_target" in table.columns:
            finished = table.loc[table["cell"].isin(rows["cell"])].set_index("cell")
            rows["global_batch"] = pd.to_numeric(finished.loc[rows["cell"], "global_batch"], errors="coerce").to_numpy()
            rows["steps_to_target"] = pd.to_numeric(finished.loc[rows["cell"], "steps_to_target"],
                                                    errors="coerce").to_numpy()
        if len(rows) < MIN_ROWS:
            raise BadMeasurements(f"{source}: {len(rows)} finished cells with a step time; the fit needs at least "
                                  f"{MIN_ROWS}")
        return rows
    missing = [column for column in REQUIRED if column not in table.columns]
    if missing or not any(column in table.columns for column in TIMES):
        need = [*missing, *([] if any(column in table.columns for column in TIMES) else ["time_per_step_s or throughput"])]
        raise BadMeasurements(f"{source}: no column {', '.join(need)}; a measurements table needs workers, "
                              "per_worker_batch, gradient_bytes and time_per_step_s or throughput")
    frame = table.copy()
    if "oversubscription" not in frame.columns:
        frame["oversubscription"] = 1.0
    if "workers_per_node" not in frame.columns:
        frame["workers_per_node"] = frame["workers"]
    checked = [*REQUIRED, "workers_per_node", "oversubscription", *(column for column in TIMES if column in frame.columns),
               *(column for column in ("global_batch", "steps_to_target") if column in frame.columns)]
    for column in checked:
        numbers = pd.to_numeric(frame[column], errors="coerce")
        for index in frame.index:
            value, number = frame.at[index, column], numbers.at[index]
            row = int(index) + 2
            if column in ("global_batch", "steps_to_target") and pd.isna(value):
                continue  # optional per row: only rows that reached the target have them
            shown = repr(value) if isinstance(value, str) else "an empty cell" if pd.isna(value) else f"{value}"
            if not np.isfinite(number):
                raise BadMeasurements(f"{source} row {row}, column {column}: {shown} is not a finite number")
            if (column in POSITIVE and number <= 0) or number < 0:
                bound = "> 0" if column in POSITIVE else ">= 0"
                raise BadMeasurements(f"{source} row {row}, column {column}: {shown}; it must be {bound}")
        frame[column] = numbers
    if "time_per_step_s" not in frame.columns:
        frame["time_per_step_s"] = frame["workers"] * frame["per_worker_batch"] / frame["throughput"]
    if len(frame) < MIN_ROWS:
        raise BadMeasurements(f"{source}: {len(frame)} row(s); the fit needs at least {MIN_ROWS}")
    return frame


def requested(measured: pd.DataFrame, workers: Sequence[int] | None, per_worker_batch: Sequence[float] | None,
              workers_per_node: int | None = None) -> pd.DataFrame:
    """The configurations to predict: each requested (or measured) worker count x each requested
    (or measured) per-worker batch, with the measurements' gradient size and no oversubscription, placed
    ``workers_per_node`` to a node (default: as the fullest measured node, where measurements crossed nodes;
    else all on one node, as they were)."""
    gradient = measured["gradient_bytes"].unique()
    if len(gradient) > 1:
        raise BadMeasurements(f"the measurements have {len(gradient)} gradient sizes "
                              f"({', '.join(f'{value:g}' for value in gradient)}); predict one model at a time")
    counts = sorted(set(workers)) if workers else sorted(measured["workers"].unique())
    batches = sorted(set(per_worker_batch)) if per_worker_batch else sorted(measured["per_worker_batch"].unique())
    crossed = (measured["workers"] > measured["workers_per_node"]).any()
    per_node = workers_per_node or (float(measured["workers_per_node"].max()) if crossed else np.inf)
    return pd.DataFrame([{"per_worker_batch": float(b), "workers": float(n), "workers_per_node": min(float(n), per_node),
                          "gradient_bytes": float(gradient[0]), "oversubscription": 1.0}
                         for n in counts for b in batches])


def critical_batch_of(measured: pd.DataFrame) -> CriticalBatchFit | None:
    if not {"global_batch", "steps_to_target"} <= set(measured.columns):
        return None
    return fit_critical_batch(measured["global_batch"].tolist(), measured["steps_to_target"].tolist())


def report(model: StepTimeModel, crit: CriticalBatchFit | None, predictions: pd.DataFrame) -> str:
    table = predictions[list(OUTPUT_COLUMNS)].copy()
    lines = [table.to_string(index=False, float_format=lambda value: f"{value:.4g}"), "",
             f"Model: T = rho combine_gamma(c0 + c1 b, [k > 1] (L(k) alpha_in + 2 (k - 1) / k M beta_in) "
             f"+ [n > 1] (L(n) alpha_across + 2 (n - 1) / n M beta_across)), k workers on each of n nodes, "
             f"fitted to {model.cells} measurements (relative rms {model.relative_rms:.3g}).",
             f"Form: {model.form.text()} (L(p) = {'2 (p - 1)' if model.form.latency == 'ring' else '2 log2 p'}); "
             f"{model.form_reason}."]
    for name, value, identified in zip(model.names, model.values, model.identified):
        lines.append(f"  {name} = {value:.4g}" + ("" if identified else " (not identified: set to 0)"))
    lines.append(f"  overlap gamma = {model.overlap:.4g}" + ("" if model.form.overlap else " (not fitted)"))
    for link in ("in_node", "across_nodes"):
        if math.isfinite(model.bandwidth_bytes_per_s(link)) and not (link == "across_nodes" and model.across_as_in_node):
            lines.append(f"  allreduce bandwidth {link.replace('_', ' ')} 1/beta = "
                         f"{model.bandwidth_bytes_per_s(link) / 1e9:.4g} GB/s")
    lines += [f"  note: {note}" for note in model.notes]
    if crit is not None:
        low, high = crit.critical_batch_interval
        lines.append(f"Critical batch B_crit = {crit.critical_batch:.4g} samples (95 % interval {low:.4g} to "
                     f"{high:.4g}); S_min = {crit.steps_min:.4g} steps.")
    lines.append(f"Intervals are 95 %: the fit's uncertainty and a measurement's own scatter ({model.noise_scale:.2%} "
                 f"relative, from {model.residual_dof} residual degree(s) of freedom and a prior of "
                 f"{NOISE_PRIOR:.0%} worth {NOISE_PRIOR_WEIGHT:g} measurements).")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scaling-predict", description=__doc__.splitlines()[0])
    parser.add_argument("measurements", type=Path, help="a CSV of measurements, or a study's runs.csv")
    parser.add_argument("--workers", type=int, nargs="+", help="worker counts to predict (default: those measured)")
    parser.add_argument("--per-worker-batch", type=float, nargs="+",
                        help="per-worker batch sizes to predict (default: those measured)")
    parser.add_argument("--workers-per-node", type=int,
                        help="workers on each node in the predictions (default: as the fullest measured node where "
                        "the measurements crossed nodes, else all on one node)")
    parser.add_argument("--out", type=Path, help="also write the predictions to this CSV")
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.workers or []) or any(not b > 0 for b in args.per_worker_batch or []) or \
            (args.workers_per_node is not None and args.workers_per_node < 1):
        raise SystemExit("scaling-predict: --workers and --workers-per-node must be >= 1 and --per-worker-batch > 0")
    try:
        table = pd.read_csv(args.measurements)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise SystemExit(f"scaling-predict: cannot read {args.measurements}: {error}") from None
    try:
        measured = measurements_of(table, str(args.measurements))
        candidates = requested(measured, args.workers, args.per_worker_batch, args.workers_per_node)
    except BadMeasurements as error:
        raise SystemExit(f"scaling-predict: {error}") from None
    model = fit_step_time(measured[list(STEP_COLUMNS)])
    crit = critical_batch_of(measured)
    predictions = predict(model, crit, candidates[list(CANDIDATE_COLUMNS)])
    print(report(model, crit, predictions))
    if args.out:
        columns = [*OUTPUT_COLUMNS, *(["steps_to_target", "time_to_target_s"] if crit is not None else [])]
        predictions[columns].to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
