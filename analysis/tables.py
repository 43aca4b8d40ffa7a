"""The tables of a study, runs.csv and epochs.csv: their one owner.

As jobs/cell.py owns the cell directory, this module owns what the analysis makes of
it: the columns analysis/collect.py writes, in their order, the study's grid axes as
runs.csv records them, and which statuses count as finished. Every reader (figures,
the answer, the course's figures) takes them from here.
"""

from __future__ import annotations

import pandas as pd

from jobs.cell import FINISHED_STATUSES, STARTUP_EPOCH, EpochRecord

__all__ = ["FINISHED_STATUSES", "finished", "grid_axes_of"]

DEFAULT_GRID_AXES = ("batch_size", "gpus")

# Columns that come before the remaining parameters, in this order; the grid axes
# are inserted after "stop_reason".
LEADING_COLUMNS = ("cell", "study", "status", "stop_reason")
RESULT_COLUMNS = (
    "world_size",
    "nodes",
    "global_batch",
    "epochs_run",
    "throughput",
    "throughput_ci95",
    "time_to_target_s",
    "steps_to_target",
    "samples_to_target",
    "time_per_step_s",
    "step_time_s",
    "noise_scale",
    "wall_time_to_target_s",
    "assessment",
    "best_val_accuracy",
    "final_val_accuracy",
    "best_val_loss",
    "train_time_s",
    "wall_time_training_s",
    "steps_time_s",
    "validation_time_s",
    "io_time_s",
    "wait_time_s",
    "other_time_s",
    "epochs_time_s",
    "speedup",
    "efficiency",
    "startup_s",
    "queue_time_s",
    "gradient_bytes",
    "flops_per_sample",
    "flop_rate",
    "workers_per_node",
    "gpus_per_node",
    "price_per_gpu_hour",
    "oversubscription",
    "threads_per_worker",
    "cpus",
    "device",
    "usage_source",
    "cpu_efficiency",
    "max_rss_gb",
    "gpu_utilization",
    "gpu_memory_gb",
    "memory_used_fraction",
    "time_limit_used_fraction",
    "restarts",
    "job_id",
    "problem",
    "scaling",
    "time_budget_s",
)
GRID_AXES_COLUMN = "grid_axes"
"""Space-separated grid axes of the study, so runs.csv describes itself."""

UPDATES_FIELD = "updates"
"""Lab 1's (w, b) after each update: its own table, updates.csv, not a column of epochs.csv."""
EPOCH_FIELDS = tuple(name for name in EpochRecord.__dataclass_fields__ if name not in ("version", UPDATES_FIELD))
UPDATE_COLUMNS = ("epoch", "update", "weight", "bias")
UPDATES_CSV = "updates.csv"
STARTUP_EPOCH_COLUMN = STARTUP_EPOCH
"""True for epochs run right after a (re)start; left out of steady-state throughput."""
# runs.csv's time split: the sum over epochs of each part of the epochs' wall time.
# train_time_s (the clock time to accuracy reads) is the last epoch's cumulative
# steps time, so it equals steps_time_s unless a record is missing.
TIME_SPLIT_COLUMNS = {"steps_s": "steps_time_s", "validation_s": "validation_time_s", "io_s": "io_time_s",
                      "wait_s": "wait_time_s", "other_s": "other_time_s", "epoch_time_s": "epochs_time_s"}


def grid_axes_of(runs: pd.DataFrame) -> list[str]:
    """The study's grid axes, from runs.attrs or the ``grid_axes`` column of runs.csv."""
    if runs.attrs.get("grid_axes"):
        return list(runs.attrs["grid_axes"])
    if GRID_AXES_COLUMN in runs.columns and runs[GRID_AXES_COLUMN].notna().any():
        return str(runs[GRID_AXES_COLUMN].dropna().iloc[0]).split()
    return list(DEFAULT_GRID_AXES)


def finished(runs: pd.DataFrame) -> pd.DataFrame:
    """The rows of cells that finished: complete or diverged (a result like any other)."""
    return runs[runs["status"].isin(FINISHED_STATUSES)]
