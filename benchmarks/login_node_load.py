"""What a grid costs the login node: processes and memory held by Snakemake and
its launchers while a grid of short cells runs on the test Slurm cluster, at 16, 256
and 1,000 cells, side by side in one run:

  limited    this project: Snakemake starts a cell's launcher only while fewer than
             launcher.max_cells_in_flight cells are in flight (the cells_in_flight resource)
  unlimited  the baseline: one waiting launcher per rule job, up to the profile's cores
             (`--resources cells_in_flight=<cells>`), as before issue 11

Each run is sampled for --seconds once its first launcher has started (the peak is
reached within seconds: the cells in flight are the first ones), then stopped and its
jobs cancelled. Memory is the proportional set size (PSS) summed over the processes: a
momentary fork of Snakemake shares its pages and is not counted twice, as RSS would.
Ratios are the baseline's peak over the project's.

    tests/cluster/up && .venv/bin/python benchmarks/login_node_load.py --cells 16 256 1000
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
CLUSTER_DIR = Path(os.environ.get("SCALING_STUDY_CLUSTER_DIR", "/tmp/scaling-study-cluster"))
IN_FLIGHT = 4  # the test cluster's 4 CPUs: 4 one-worker cells at once


@dataclass(frozen=True)
class Load:
    processes: int  # Snakemake and everything it started on this machine
    launchers: int
    pss_mb: float  # proportional set size: pages shared with a fork or a sibling count once in all


def study_config(cells: int) -> dict[str, object]:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["studies"] = {"load": {"grid": {"batch_size": [32], "gpus": [1], "repeat": list(range(cells))},
                                  "fixed": {"dataset": "digits", "model": "cnn", "epochs": 1,
                                            "train_subset": 200}}}
    return config


def profile(directory: Path) -> Path:
    settings = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    settings["config"]["launcher"].update({"max_cells_in_flight": IN_FLIGHT, "poll_interval_s": 1,
                                           "scheduler_refresh_s": 10})
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(settings))
    return directory


def sample(root: psutil.Process) -> Load:
    processes = [root]
    with contextlib.suppress(psutil.Error):
        processes += root.children(recursive=True)
    pss, launchers = 0, 0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            pss += process.memory_full_info().pss
            launchers += "train_cell" in " ".join(process.cmdline())
    return Load(len(processes), launchers, pss / 2**20)


def cancel_jobs(env: dict[str, str]) -> None:
    """Every job of the study: its job arrays are named "load.<submission id>"."""
    listed = subprocess.run(["squeue", "-h", "-o", "%F|%j"], env=env, capture_output=True, text=True, check=False)
    arrays = sorted({line.split("|")[0] for line in listed.stdout.splitlines() if line.split("|")[-1].startswith("load.")})
    if arrays:
        subprocess.run(["scancel", *arrays], env=env, check=False)


def measure(cells: int, limited: bool, seconds: float, env: dict[str, str]) -> Load:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "config").mkdir()
        (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(study_config(cells)))
        command = [str(SNAKEMAKE), "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(workdir),
                   "--profile", str(profile(workdir / "profile"))]
        if not limited:
            command += ["--resources", f"cells_in_flight={cells}"]
        with open(workdir / "snakemake.log", "w") as log:
            run = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        root = psutil.Process(run.pid)
        peak = Load(0, 0, 0.0)
        first_launcher = None
        deadline = time.monotonic() + 600
        while run.poll() is None and time.monotonic() < deadline:
            load = sample(root)
            peak = Load(max(peak.processes, load.processes), max(peak.launchers, load.launchers),
                        max(peak.pss_mb, load.pss_mb))
            if load.launchers and first_launcher is None:
                first_launcher = time.monotonic()
            if first_launcher is not None and time.monotonic() - first_launcher > seconds:
                break
            time.sleep(0.5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
        run.wait()
        cancel_jobs(env)
        return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[16, 256, 1000])
    parser.add_argument("--seconds", type=float, default=45, help="sampling time after the first launcher starts")
    args = parser.parse_args()
    env = os.environ | {"SLURM_CONF": str(CLUSTER_DIR / "etc" / "slurm.conf")}
    print(f"{IN_FLIGHT} cells in flight at most (max_cells_in_flight); peak over {args.seconds:.0f} s of each run")
    print("| cells | launchers (limited) | processes (limited) | PSS MB (limited) | launchers (unlimited) "
          "| processes (unlimited) | PSS MB (unlimited) | memory unlimited / limited |")
    print("|---|---|---|---|---|---|---|---|")
    for cells in args.cells:
        limited = measure(cells, True, args.seconds, env)
        unlimited = measure(cells, False, args.seconds, env)
        print(f"| {cells} | {limited.launchers} | {limited.processes} | {limited.pss_mb:.0f} | {unlimited.launchers} "
              f"| {unlimited.processes} | {unlimited.pss_mb:.0f} | {unlimited.pss_mb / limited.pss_mb:.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
