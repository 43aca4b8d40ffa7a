"""How the workflow itself scales with the grid: a whole `snakemake` that finds every cell of
a grid of N cells finished and analyses them (tables, figures, the answer), phase by phase,
for N = 100, 1,000 and 10,000, on this machine with the default profile.

The finished cells are copies of the six cells of the shipped default study, trained here
for real (8 epochs of metrics each), under a seed axis: each copy has its own seed written
into its records, so the analysis reads N real cell directories with N different
parameter sets; the run that analyses them trains nothing (checked). Printed per N: the
whole run; Snakemake's own parse and DAG (a `snakemake -n` of the same tree); collect and
the figures and the answer (from the seconds the analysis commands log); and the rest
(interpreter starts, Snakemake's bookkeeping), with seconds per 1,000 cells.

    .venv/bin/python benchmarks/grid_scale.py --cells 100 1000 10000
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from analysis import TIMING_PREFIX  # noqa: E402
from jobs.plan.grid import make_plan  # noqa: E402

SNAKEMAKE = Path(sys.executable).parent / "snakemake"
STUDY = "default"


def shipped_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["studies"] = {STUDY: config["studies"][STUDY]}
    return config


def config_for(cells: int) -> dict[str, Any]:
    """The default study under a seed axis, with at least `cells` cells."""
    config = shipped_config()
    study = config["studies"][STUDY]
    per_seed = math.prod(len(values) for values in study["grid"].values())
    study["fixed"].pop("seed", None)
    study["grid"]["seed"] = list(range(math.ceil(cells / per_seed)))
    return config


def snakemake(workdir: Path, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    command = [str(SNAKEMAKE), "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(workdir),
               "--profile", str(REPO / "profiles" / "default"), *args]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"snakemake {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - started, result


def with_seed(text: str, name: str, seed: int, grid_axes: list[str]) -> str:
    """A record of the template cell, as the cell `name` with this seed would have it."""
    record = json.loads(text)
    if isinstance(record.get("params"), dict):
        record["params"] = {**record["params"], "seed": seed}
    if "cell" in record:
        record["cell"] = name
    if "grid_axes" in record:
        record["grid_axes"] = grid_axes
    return json.dumps(record)


def clone_cells(workdir: Path, config: dict[str, Any], templates: Path) -> int:
    """Every cell of the plan, as a copy of the template cell of its batch size and workers."""
    plan = make_plan(config, root=workdir, warn=lambda message: None)
    cells_dir = workdir / "results" / STUDY / "cells"
    by_shape: dict[tuple[int, int], tuple[list[str], str]] = {}
    for template in templates.iterdir():
        summary = json.loads((template / "summary.json").read_text())
        shape = (summary["params"]["batch_size"], summary["params"]["gpus"])
        by_shape[shape] = ((template / "metrics.jsonl").read_text().splitlines(),
                           (template / "summary.json").read_text())
    axes = list(plan.studies[STUDY].axes)
    for name, params in plan.studies[STUDY].cells.items():
        metrics, summary_text = by_shape[(params.batch_size, params.gpus)]
        target = cells_dir / name
        target.mkdir(parents=True)
        (target / "metrics.jsonl").write_text(
            "\n".join(with_seed(line, name, params.seed, axes) for line in metrics) + "\n")
        (target / "summary.json").write_text(with_seed(summary_text, name, params.seed, axes))
    return len(plan.studies[STUDY].cells)


def logged_seconds(log: Path) -> dict[str, float]:
    pattern = re.compile(rf"^{re.escape(TIMING_PREFIX)}(.+) ([0-9.]+) s$", re.MULTILINE)
    return {phase: float(seconds) for phase, seconds in pattern.findall(log.read_text())}


def measure(cells: int, templates: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "config").mkdir()
        config = config_for(cells)
        (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
        count = clone_cells(workdir, config, templates)
        dag_s, _ = snakemake(workdir, "-n", "-q")
        total_s, result = snakemake(workdir)
        if "rule train_cell" in result.stderr:
            raise SystemExit("the analysis run trained cells: the copies were not taken as finished")
        runs = (workdir / "results" / STUDY / "runs.csv").read_text().splitlines()
        if len(runs) - 1 != count:
            raise SystemExit(f"runs.csv has {len(runs) - 1} rows for {count} cells")
        logs = workdir / "results" / STUDY / "logs"
        collect = logged_seconds(logs / "collect.log")
        analysis = logged_seconds(logs / "analyse_study.log")
        figures_s = sum(seconds for phase, seconds in analysis.items() if phase.endswith("figures"))
        answer_s = analysis.get("answer", 0.0) + analysis.get("reading the tables", 0.0)
        phases = {"cells": count, "total": total_s, "dag": dag_s, "collect": collect["collect"],
                  "figures": figures_s, "answer": answer_s}
        phases["rest"] = total_s - dag_s - phases["collect"] - figures_s - answer_s
        return phases


def train_templates(directory: Path) -> Path:
    """The six cells of the shipped default study, trained for real."""
    (directory / "config").mkdir(parents=True)
    (directory / "config" / "config.yaml").write_text(yaml.safe_dump(shipped_config()))
    snakemake(directory, *[f"results/{STUDY}/cells/{cell}/summary.json"
                           for cell in make_plan(shipped_config(), root=directory).studies[STUDY].cells])
    cells = directory / "results" / STUDY / "cells"
    for cell in cells.iterdir():
        shutil.rmtree(cell / "submitit", ignore_errors=True)
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[100, 1000, 10000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        templates = train_templates(Path(tmp) / "templates")
        names = ("total", "dag", "collect", "figures", "answer", "rest")
        print("| cells | whole run (s) | Snakemake parse + DAG (s) | collect (s) | figures (s) | answer (s) "
              "| the rest (s) | whole run per 1,000 cells (s) |\n|---|---|---|---|---|---|---|---|", flush=True)
        for cells in args.cells:
            phases = measure(cells, templates)
            print(f"| {int(phases['cells'])} | " + " | ".join(f"{phases[name]:.1f}" for name in names)
                  + f" | {1000 * phases['total'] / phases['cells']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
