"""The same grid of short cells run three ways on the test Slurm cluster, side by side:

  project   this workflow: `snakemake --profile slurm --until train_cell` (a launcher per cell
            in flight; one shared call to Slurm per refresh for all of them: an sbatch of
            the cells queued meanwhile as a job array, or a sacct)
  plugin    snakemake-executor-plugin-slurm: the same training as a plain Snakemake rule,
            one Slurm job per cell (`snakemake --executor slurm`)
  submitit  one submitit process per cell, each submitting its cell and waiting for its result

Every tool trains the same cells with the same code (benchmarks/peer_cell.py builds the
project's own TrainingJob) and keeps at most --in-flight cells queued or running (the
project's max_cells_in_flight, the plugin's --jobs, the number of submitit processes).

Printed per tool and grid size: the makespan (first command to last result), the ideal
makespan (the summed run time of the tool's jobs in Slurm over the cluster's 4 slots, or its
longest job if longer), their ratio, and the sbatch, sacct and squeue calls per minute,
counted by wrappers on PATH that log each call and exec the real command.

The peers are installed into their own virtual environment under ~/.cache/scaling-study
(their pins: pyproject.toml, [tool.scaling-study] benchmark-peers; Snakemake's is the project's).

    tests/cluster/up && .venv/bin/python benchmarks/peers.py --cells 16 256
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import tomllib
import yaml

REPO = Path(__file__).resolve().parents[1]
PYTHON = Path(sys.executable)
SNAKEMAKE = PYTHON.parent / "snakemake"
CLUSTER_DIR = Path(os.environ.get("SCALING_STUDY_CLUSTER_DIR", "/tmp/scaling-study-cluster"))
SLOTS = 4  # the test cluster: 2 nodes x 2 CPUs (and 2 GPUs); one 1-worker cell per slot
STUDY = "peers"
COUNTED = ("sbatch", "sacct", "squeue")
TOOLS = ("project", "plugin", "submitit")


@dataclass(frozen=True)
class Outcome:
    tool: str
    cells: int
    makespan_s: float
    job_seconds: list[int]  # each job's run time in Slurm
    calls: Counter[str]
    failed: int

    @property
    def ideal_s(self) -> float:
        return max(sum(self.job_seconds) / SLOTS, max(self.job_seconds, default=0))

    def per_minute(self, command: str) -> float:
        return self.calls[command] / (self.makespan_s / 60)


# --- the peers' environment ------------------------------------------------------------
def peer_pins() -> list[str]:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    snakemake = next(pin for pin in pyproject["project"]["dependencies"] if pin.startswith("snakemake=="))
    return [snakemake, *pyproject["tool"]["scaling-study"]["benchmark-peers"]]


def peer_environment() -> Path:
    """A virtual environment with the pinned peers, made once and reused (its pins in its name)."""
    pins = peer_pins()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "scaling-study"
    env = cache / f"peers-{hashlib.sha256(' '.join(pins).encode()).hexdigest()[:12]}"
    done = env / ".installed"
    if not done.exists():
        print(f"installing the peers into {env}: {' '.join(pins)}", flush=True)
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", "--clear", str(env)], check=True)
        subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "--quiet", *pins], check=True)
        done.write_text("\n".join(pins) + "\n")
    return env


# --- counting scheduler calls -------------------------------------------------------------
def counting_path(directory: Path, log: Path, env: dict[str, str]) -> str:
    """A PATH whose sbatch, sacct and squeue log each call to `log`, then exec the real one."""
    directory.mkdir(parents=True, exist_ok=True)
    for command in COUNTED:
        real = shutil.which(command, path=env["PATH"])
        if real is None:
            raise SystemExit(f"{command} is not on PATH: run tests/cluster/up and source its env.sh")
        wrapper = directory / command
        wrapper.write_text(f'#!/bin/sh\necho {command} >> {log}\nexec {real} "$@"\n')
        wrapper.chmod(0o755)
    # The plugin's job step drops every SLURM_* variable but a few before its srun, SLURM_CONF
    # too: on a site whose slurm.conf is at the default path that is harmless, on the test
    # cluster (its slurm.conf under its state directory) srun would find no configuration.
    srun, conf = shutil.which("srun", path=env["PATH"]), env["SLURM_CONF"]
    (directory / "srun").write_text(f'#!/bin/sh\nSLURM_CONF="${{SLURM_CONF:-{conf}}}" exec {srun} "$@"\n')
    (directory / "srun").chmod(0o755)
    return f"{directory}:{env['PATH']}"


def count_calls(log: Path) -> Counter[str]:
    return Counter(log.read_text().split()) if log.exists() else Counter()


# --- the grid -----------------------------------------------------------------------------
def study_config(cells: int) -> dict[str, object]:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["studies"] = {STUDY: {"grid": {"batch_size": [32], "gpus": [1], "repeat": list(range(cells))},
                                 "fixed": {"dataset": "digits", "model": "cnn", "epochs": 1, "train_subset": 200}}}
    return config


def cell_names(workdir: Path) -> list[str]:
    sys.path.insert(0, str(REPO))
    from jobs.plan.grid import make_plan

    config = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    return list(make_plan(config, root=workdir, warn=lambda _line: None).studies[STUDY].cells)


def results_done(cells_dir: Path) -> int:
    return sum(1 for _ in cells_dir.glob("*/result.json")) if cells_dir.exists() else 0


def wait_with_progress(processes: list[subprocess.Popen[bytes]], cells_dir: Path, cells: int, tool: str) -> None:
    last = 0.0
    while any(p.poll() is None for p in processes):
        if time.monotonic() - last > 30:
            print(f"  {tool}: {results_done(cells_dir)}/{cells} cells done", flush=True)
            last = time.monotonic()
        time.sleep(0.5)


# --- the three tools ----------------------------------------------------------------------
def run_project(workdir: Path, cells: int, in_flight: int, env: dict[str, str]) -> Path:
    settings = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    settings["config"]["launcher"]["max_cells_in_flight"] = in_flight
    (workdir / "profile").mkdir()
    (workdir / "profile" / "config.yaml").write_text(yaml.safe_dump(settings))
    command = [str(SNAKEMAKE), "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(workdir),
               "--profile", str(workdir / "profile"), "--until", "train_cell"]
    with open(workdir / "tool.log", "w") as log:
        run = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    cells_dir = workdir / "results" / STUDY / "cells"
    wait_with_progress([run], cells_dir, cells, "project")
    return cells_dir


PLUGIN_SNAKEFILE = """\
CELLS = {cells!r}

rule all:
    input: expand("cells/{{cell}}/result.json", cell=CELLS)

rule train:
    output: "cells/{{cell}}/result.json"
    resources: cpus_per_task=1, gres="gpu:1", mem_mb=1000, runtime=60, slurm_partition="debug"
    shell: "{python} {peer_cell} {workdir} {{wildcards.cell}} cells/{{wildcards.cell}}"
"""


def run_plugin(workdir: Path, cells: int, in_flight: int, env: dict[str, str], peers: Path) -> Path:
    snakefile = workdir / "Snakefile"
    snakefile.write_text(PLUGIN_SNAKEFILE.format(cells=cell_names(workdir), python=PYTHON, workdir=workdir,
                                                 peer_cell=REPO / "benchmarks" / "peer_cell.py"))
    command = [str(peers / "bin" / "snakemake"), "--snakefile", str(snakefile), "--directory", str(workdir),
               "--executor", "slurm", "--jobs", str(in_flight), "--latency-wait", "15"]
    with open(workdir / "tool.log", "w") as log:
        run = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_with_progress([run], workdir / "cells", cells, "plugin")
    return workdir / "cells"


def run_submitit(workdir: Path, cells: int, in_flight: int, env: dict[str, str]) -> Path:
    pending = cell_names(workdir)
    running: list[subprocess.Popen[bytes]] = []
    log = open(workdir / "tool.log", "w")  # noqa: SIM115  (the processes write to it)
    last = 0.0
    while pending or running:
        running = [p for p in running if p.poll() is None]
        while pending and len(running) < in_flight:
            cell = pending.pop(0)
            running.append(subprocess.Popen(
                [str(PYTHON), str(REPO / "benchmarks" / "peer_cell.py"), str(workdir), cell,
                 str(workdir / "cells" / cell), "--submit"], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT))
        if time.monotonic() - last > 30:
            print(f"  submitit: {results_done(workdir / 'cells')}/{cells} cells done", flush=True)
            last = time.monotonic()
        time.sleep(0.2)
    log.close()
    return workdir / "cells"


# --- what Slurm saw -----------------------------------------------------------------------
def jobs_since(started: float, env: dict[str, str]) -> list[tuple[str, int]]:
    """(state, run seconds) of every job submitted since `started`."""
    since = datetime.fromtimestamp(started)
    output = subprocess.run(["sacct", "-X", "-n", "-P", "-a", "-S", since.strftime("%Y-%m-%dT%H:%M:%S"),
                             "-o", "JobIDRaw,Submit,ElapsedRaw,State"],
                            capture_output=True, text=True, check=True, env=env).stdout
    jobs = []
    for line in output.splitlines():
        _, submitted, elapsed, state = line.split("|")[:4]
        if datetime.fromisoformat(submitted) >= since.replace(microsecond=0):
            jobs.append((state.split()[0], int(elapsed)))
    return jobs


def measure(tool: str, cells: int, in_flight: int, env: dict[str, str], peers: Path) -> Outcome:
    workdir = Path(tempfile.mkdtemp(prefix=f"peers-{tool}-{cells}-"))
    try:
        (workdir / "config").mkdir()
        (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(study_config(cells)))
        calls_log = workdir / "scheduler_calls.log"
        counted = env | {"PATH": counting_path(workdir / "bin", calls_log, env)}
        print(f"{tool}, {cells} cells:", flush=True)
        started = time.time()
        if tool == "project":
            cells_dir = run_project(workdir, cells, in_flight, counted)
        elif tool == "plugin":
            cells_dir = run_plugin(workdir, cells, in_flight, counted, peers)
        else:
            cells_dir = run_submitit(workdir, cells, in_flight, counted)
        makespan = time.time() - started
        time.sleep(2)  # let slurmdbd record the last job's end
        jobs = jobs_since(started, env)
        done = results_done(cells_dir)
        outcome = Outcome(tool, cells, makespan, [seconds for state, seconds in jobs if state == "COMPLETED"],
                          count_calls(calls_log), cells - done)
    except BaseException:
        print(f"  {tool}: stopped; its files are kept in {workdir}", flush=True)
        raise
    if done != cells:
        print(f"  {tool}: only {done}/{cells} cells have a result; its files are kept in {workdir}", flush=True)
    else:
        shutil.rmtree(workdir)
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[16, 256])
    parser.add_argument("--in-flight", type=int, default=16, help="cells queued or running at once, for every tool")
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    args = parser.parse_args()
    env = os.environ | {"SLURM_CONF": str(CLUSTER_DIR / "etc" / "slurm.conf")}
    peers = peer_environment() if "plugin" in args.tools else Path()
    outcomes = [measure(tool, cells, args.in_flight, env, peers) for cells in args.cells for tool in args.tools]
    print(f"\n{SLOTS} slots; at most {args.in_flight} cells in flight for every tool; ideal = the jobs' summed "
          f"run time / {SLOTS} slots")
    print("| cells | tool | makespan s | ideal s | makespan / ideal | mean job s | sbatch / min | sacct / min "
          "| squeue / min | sacct + squeue / min | failed |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for o in outcomes:
        mean_job = sum(o.job_seconds) / max(len(o.job_seconds), 1)
        ratio = f"{o.makespan_s / o.ideal_s:.2f}" if o.ideal_s else "-"
        print(f"| {o.cells} | {o.tool} | {o.makespan_s:.0f} | {o.ideal_s:.0f} | {ratio} "
              f"| {mean_job:.1f} | {o.per_minute('sbatch'):.1f} | {o.per_minute('sacct'):.1f} "
              f"| {o.per_minute('squeue'):.1f} | {o.per_minute('sacct') + o.per_minute('squeue'):.1f} | {o.failed} |",
              flush=True)


if __name__ == "__main__":
    main()
