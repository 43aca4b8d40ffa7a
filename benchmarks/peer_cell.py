"""One cell of a study trained outside this project's launcher, as benchmarks/peers.py's
peers run it; its parameters and its training are the project's own (make_plan, TrainingJob).

  peer_cell.py STUDY_DIR CELL CELL_DIR            train it in this process (a plain Snakemake
                                                  job's command, inside the Slurm job a peer submitted)
  peer_cell.py STUDY_DIR CELL CELL_DIR --submit   submit it to Slurm with submitit and wait for
                                                  its result (one such process per cell)

STUDY_DIR holds config/config.yaml with one study.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.launch.launcher import CellLaunch
from jobs.plan.grid import make_plan
from jobs.plan.params import LauncherSettings, TrainParams
from jobs.train.job import TrainingJob


def training_job(study_dir: Path, cell: str, cell_dir: Path) -> tuple[TrainingJob, TrainParams]:
    """The job this project's launcher would submit for `cell`, and the cell's parameters."""
    plan = make_plan(yaml.safe_load((study_dir / "config" / "config.yaml").read_text()), root=study_dir)
    (study, spec), = plan.studies.items()
    params = spec.cells[cell]
    job = TrainingJob(cell_dir=str(cell_dir.resolve()), study=study, cell=cell, grid_axes=spec.axes,
                      params=params.to_dict(), data_dir=str((study_dir / plan.data_dir).resolve()))
    return job, params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study_dir", type=Path)
    parser.add_argument("cell")
    parser.add_argument("cell_dir", type=Path)
    parser.add_argument("--submit", action="store_true", help="submit with submitit and wait, instead of training here")
    parser.add_argument("--partition", default="debug")
    args = parser.parse_args()
    args.cell_dir.mkdir(parents=True, exist_ok=True)
    job, params = training_job(args.study_dir, args.cell, args.cell_dir)
    if not args.submit:
        # A Slurm job submitit did not start: its job environment reads Slurm's variables
        # once told that it runs under Slurm (submitit's own scripts export this).
        os.environ["SUBMITIT_EXECUTOR"] = "slurm"
        job()
        return
    launcher = LauncherSettings(executor="slurm", slurm={"partition": args.partition})
    task = CellLaunch(args.cell_dir, job.study, args.cell, job.grid_axes, params, launcher, Path(job.data_dir))
    task.executor(args.cell_dir / "submitit").submit(job).result()


if __name__ == "__main__":
    main()
