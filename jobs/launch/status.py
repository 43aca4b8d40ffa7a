"""Status at a glance: every cell of every study, with its job, state and progress.

    scaling-status                       # the study in this directory: config/config.yaml, results/
    scaling-status --directory ~/study   # the study in ~/study, from anywhere
    scaling-status --configfile my.yaml  # relative to --directory

Reads the cell directories and makes one batched sacct call for all Slurm jobs (squeue for
those sacct does not know, or for all while sacct does not answer).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from jobs.cell import CellDir, JobRecord
from jobs.launch.slurm import JobState, SchedulerUnavailable, job_states
from jobs.plan.config import ConfigError
from jobs.plan.grid import make_plan

COLUMNS = ("study", "cell", "job", "state", "elapsed", "epoch", "val_acc", "cpu_eff", "max_rss_gb", "gpu_util",
           "gpu_mem_gb")


def hms(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def cell_state(cell: CellDir, record: JobRecord | None, slurm: dict[str, JobState]) -> tuple[str, str]:
    """(state, elapsed) of one cell; a damaged summary is reported, not raised."""
    summary, problem = cell.read_summary()
    if problem is not None:
        return f"broken ({problem})", ""
    if summary is not None:
        seconds = summary.get("wall_time_s") or summary.get("train_time_s") or 0.0
        return str(summary["status"]), hms(float(seconds))
    if record is None:
        return "not started", ""
    if record.executor == "slurm" and record.job_id in slurm:
        job = slurm[record.job_id]
        return job.state, job.elapsed
    return "incomplete", ""


def status_rows(config: dict[str, Any], directory: Path = Path(".")) -> list[dict[str, str]]:
    """One row per cell of `config`, whose results_dir is relative to `directory`."""
    plan = make_plan(config, root=directory, warn=lambda _message: None)
    cells = [(study, name, CellDir(directory / plan.results_dir / study / "cells" / name))
             for study, spec in plan.studies.items() for name in spec.cells]
    records = {cell.path: cell.read_job() for _, _, cell in cells}
    slurm_ids = sorted({r.job_id for r in records.values() if r is not None and r.executor == "slurm"})
    slurm = job_states(slurm_ids) if slurm_ids else {}
    rows = []
    for study, name, cell in cells:
        record = records[cell.path]
        state, elapsed = cell_state(cell, record, slurm)
        epoch = cell.last_epoch()
        accuracy = epoch.val_accuracy if epoch else None
        rows.append({
            "study": study,
            "cell": name,
            "job": record.job_id if record else "-",
            "state": state,
            "elapsed": elapsed or "-",
            "epoch": f"{epoch.epoch}/{plan.studies[study].cells[name].epochs}" if epoch else "-",
            "val_acc": f"{accuracy:.3f}" if accuracy is not None else "-",
            # What the workers used in the last epoch logged (jobs/train/usage.py).
            "cpu_eff": number(epoch.cpu_efficiency if epoch else None, ".2f"),
            "max_rss_gb": number(epoch.max_rss_gb if epoch else None, ".2f"),
            "gpu_util": number(epoch.gpu_utilization if epoch else None, ".0%"),
            "gpu_mem_gb": number(epoch.gpu_memory_gb if epoch else None, ".1f"),
        })
    return rows


def number(value: float | None, spec: str) -> str:
    return format(value, spec) if value is not None else "-"


def format_table(rows: list[dict[str, str]]) -> str:
    widths = {c: max([len(c)] + [len(r[c]) for r in rows]) for c in COLUMNS}
    lines = ["  ".join(c.ljust(widths[c]) for c in COLUMNS)]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in COLUMNS) for r in rows]
    return "\n".join(lines)


def read_config(path: Path) -> dict[str, Any]:
    """The study's config, or SystemExit with one line saying what is wrong with the file."""
    if not path.is_file():
        raise SystemExit(f"scaling-status: no config file {path}; run it in the study's directory "
                         "(where `snakemake` runs) or pass --directory DIR")
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise SystemExit(f"scaling-status: cannot read {path}: {' '.join(str(error).split())}") from None
    if not isinstance(config, dict):
        raise SystemExit(f"scaling-status: {path} does not hold a mapping of settings (studies: ...)")
    return config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--directory", "-d", type=Path, default=Path("."),
                        help="the study's directory, where `snakemake` runs (default: this one)")
    parser.add_argument("--configfile", type=Path, default=Path("config/config.yaml"),
                        help="the config, relative to --directory (default: config/config.yaml)")
    args = parser.parse_args(argv)
    if not args.directory.is_dir():
        raise SystemExit(f"scaling-status: --directory {args.directory} is not a directory")
    config = read_config(args.directory / args.configfile)
    try:
        print(format_table(status_rows(config, args.directory)))
    except ConfigError as error:
        raise SystemExit(str(error)) from None
    except SchedulerUnavailable as error:
        raise SystemExit(f"scaling-status: Slurm does not answer ({error}); try again in a minute") from None


if __name__ == "__main__":
    main()
