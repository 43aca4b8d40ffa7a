"""Status at a glance: every cell of every study, with its job, state and progress.

    scaling-status                       # reads config/config.yaml
    scaling-status --configfile my.yaml

Reads the cell directories and makes one batched sacct call for all Slurm jobs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from jobs.config import ConfigError
from jobs.grid import make_plan
from jobs.launch import SUMMARY_FILE, JobRecord
from jobs.scheduler import JobState, query_sacct
from jobs.train import METRICS_FILE

COLUMNS = ("study", "cell", "job", "state", "elapsed", "epoch", "val_acc")


def last_epoch(cell_dir: Path) -> dict[str, Any] | None:
    last = None
    try:
        lines = (cell_dir / METRICS_FILE).read_text().splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("type") == "epoch":
            last = record
    return last


def cell_state(cell_dir: Path, record: JobRecord | None, slurm: dict[str, JobState]) -> tuple[str, str]:
    """(state, elapsed) of one cell."""
    if (cell_dir / SUMMARY_FILE).exists():
        summary = json.loads((cell_dir / SUMMARY_FILE).read_text())
        seconds = round(summary.get("wall_time_s") or summary["train_time_s"])
        return summary["status"], f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    if record is None:
        return "not started", ""
    if record.executor == "slurm" and record.job_id in slurm:
        job = slurm[record.job_id]
        return job.state, job.elapsed
    return "incomplete", ""


def status_rows(config: dict[str, Any]) -> list[dict[str, str]]:
    plan = make_plan(config)
    cells = [(study, cell, Path(plan.results_dir) / study / "cells" / cell)
             for study, spec in plan.studies.items() for cell in spec.cells]
    records = {cell_dir: JobRecord.read(cell_dir) for _, _, cell_dir in cells}
    slurm_ids = sorted({r.job_id for r in records.values() if r is not None and r.executor == "slurm"})
    slurm = query_sacct(slurm_ids) if slurm_ids else {}
    rows = []
    for study, cell, cell_dir in cells:
        record = records[cell_dir]
        state, elapsed = cell_state(cell_dir, record, slurm)
        epoch = last_epoch(cell_dir)
        accuracy = epoch.get("val_accuracy") if epoch else None
        rows.append({
            "study": study,
            "cell": cell,
            "job": record.job_id if record else "-",
            "state": state,
            "elapsed": elapsed or "-",
            "epoch": f"{epoch['epoch']}/{plan.studies[study].cells[cell].epochs}" if epoch else "-",
            "val_acc": f"{accuracy:.3f}" if accuracy is not None else "-",
        })
    return rows


def format_table(rows: list[dict[str, str]]) -> str:
    widths = {c: max([len(c)] + [len(r[c]) for r in rows]) for c in COLUMNS}
    lines = ["  ".join(c.ljust(widths[c]) for c in COLUMNS)]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in COLUMNS) for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", type=Path, default=Path("config/config.yaml"))
    args = parser.parse_args(argv)
    config = yaml.safe_load(args.configfile.read_text())
    try:
        print(format_table(status_rows(config)))
    except ConfigError as error:
        raise SystemExit(str(error)) from None


if __name__ == "__main__":
    main()
