"""How the workflow itself scales with the grid: `snakemake -n` over a grid of N cells, and
the analysis (tables, figures, the answer) of N finished cells, side by side for N = 100,
1,000 and 10,000, on this machine with the default profile.

The finished cells are copies of two cells trained for real (1 and 2 workers), each copy
with its own grid values written into its records, so the analysis reads N real cell
directories; the run that analyses them trains nothing (checked). Printed: seconds and
seconds per 1,000 cells, whose ratio to the smallest grid's says whether the cost grows
faster than the cells.

    .venv/bin/python benchmarks/grid_scale.py --cells 100 1000 10000
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
BATCHES = [16, 32, 64, 128, 256]
WORKERS = [1, 2]
TEMPLATE_BATCH = 32


def config_for(cells: int) -> dict[str, Any]:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    repeats = cells // (len(BATCHES) * len(WORKERS))
    config["studies"] = {"big": {"grid": {"batch_size": BATCHES, "gpus": WORKERS, "repeat": list(range(repeats))},
                                 "fixed": {"dataset": "digits", "model": "cnn", "epochs": 2, "train_subset": 600,
                                           "target_accuracy": 0.3, "patience": 1}}}
    return config


def snakemake(workdir: Path, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    command = [str(SNAKEMAKE), "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(workdir),
               "--profile", str(REPO / "profiles" / "default"), *args]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"snakemake {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - started, result


def with_values(text: str, name: str, batch: int, repeat: int) -> str:
    """A record of the template cell, as the cell `name` with this batch and repeat would have it."""
    record = json.loads(text)
    if isinstance(record.get("params"), dict):
        record["params"] = {**record["params"], "batch_size": batch, "repeat": repeat}
    if "cell" in record:
        record["cell"] = name
    return json.dumps(record)


def clone_cells(cells_dir: Path, templates: dict[int, Path], repeats: int) -> None:
    for workers, template in templates.items():
        metrics = (template / "metrics.jsonl").read_text().splitlines()
        summary = (template / "summary.json").read_text()
        for batch in BATCHES:
            for repeat in range(repeats):
                name = f"bs{batch}-gpus{workers}-rep{repeat}"
                target = cells_dir / name
                if target == template:
                    continue
                target.mkdir(parents=True, exist_ok=True)
                (target / "metrics.jsonl").write_text(
                    "\n".join(with_values(line, name, batch, repeat) for line in metrics) + "\n")
                (target / "summary.json").write_text(with_values(summary, name, batch, repeat))


def measure(cells: int, templates_from: Path) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "config").mkdir()
        config = config_for(cells)
        (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
        dry_s, _ = snakemake(workdir, "-n", "-q")
        cells_dir = workdir / "results" / "big" / "cells"
        templates = {}
        for workers in WORKERS:
            name = f"bs{TEMPLATE_BATCH}-gpus{workers}-rep0"
            shutil.copytree(templates_from / name, cells_dir / name, ignore=shutil.ignore_patterns("submitit"))
            templates[workers] = cells_dir / name
        clone_cells(cells_dir, templates, len(config["studies"]["big"]["grid"]["repeat"]))
        analysis_s, result = snakemake(workdir)
        if "rule train_cell" in result.stderr:
            raise SystemExit("the analysis run trained cells: the copies were not taken as finished")
        table = (workdir / "results" / "big" / "runs.csv").read_text().splitlines()
        if len(table) - 1 != cells:
            raise SystemExit(f"runs.csv has {len(table) - 1} rows for {cells} cells")
        return dry_s, analysis_s


def train_templates(directory: Path) -> Path:
    """The two cells every copy is made from, trained for real."""
    (directory / "config").mkdir(parents=True)
    (directory / "config" / "config.yaml").write_text(yaml.safe_dump(config_for(len(BATCHES) * len(WORKERS))))
    targets = [f"results/big/cells/bs{TEMPLATE_BATCH}-gpus{workers}-rep0/summary.json" for workers in WORKERS]
    snakemake(directory, *targets)
    return directory / "results" / "big" / "cells"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[100, 1000, 10000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        templates = train_templates(Path(tmp) / "templates")
        print("| cells | snakemake -n (s) | per 1,000 cells (s) | vs smallest | analysis of finished cells (s) "
              "| per 1,000 cells (s) | vs smallest |\n|---|---|---|---|---|---|---|")
        first: tuple[float, float] | None = None
        for cells in args.cells:
            dry_s, analysis_s = measure(cells, templates)
            per = (1000 * dry_s / cells, 1000 * analysis_s / cells)
            first = first or per
            print(f"| {cells} | {dry_s:.1f} | {per[0]:.2f} | {per[0] / first[0]:.2f} | {analysis_s:.1f} "
                  f"| {per[1]:.2f} | {per[1] / first[1]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
