"""How well does the scaling model predict a worker count it has not seen? Side by side,
per cell of the largest worker count: its measured time per step beside the step-time
model's prediction (analysis/scaling_model.py) fitted on the other worker counts only,
the prediction's 95 % interval and the ratio predicted / measured (1.00: exact).

By default it runs the default study's settings (config/config.yaml) on 1, 2, 4 and 8
workers through the workflow on this machine, in a scratch directory (on 2 cores the
4- and 8-worker cells time-share the cores, and the workflow warns so), then reads its
runs.csv; give --results to read a study that has already run (on a cluster, say):

    .venv/bin/python benchmarks/scaling_prediction.py
    .venv/bin/python benchmarks/scaling_prediction.py --results results/default
    .venv/bin/python benchmarks/scaling_prediction.py --hold-out-from 4   # also 4 and 8 from 1-2, ...
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from analysis.answer import step_rows
from analysis.scaling_model import fit_step_time, holdout

REPO = Path(__file__).resolve().parents[1]
WORKERS = [1, 2, 4, 8]  # three counts besides the largest held out, so the fit without it sees communication


def run_default_study(workdir: Path) -> Path:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    study = config["studies"]["default"]
    study["grid"]["gpus"] = WORKERS
    config["studies"] = {"default": study}
    (workdir / "config").mkdir(parents=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake = Path(sys.executable).parent / "snakemake"
    print(f"running the default study in {workdir} on 1, 2, 4 and 8 workers (about 3 minutes on 2 cores) ...", flush=True)
    subprocess.run([str(snakemake), "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(workdir),
                    "--profile", str(REPO / "profiles" / "default"), "--quiet", "progress"], check=True)
    return workdir / "results" / "default"


def held_out_table(observed: pd.DataFrame, largest_fitted: int) -> pd.DataFrame | None:
    """Fit on cells of up to `largest_fitted` workers, predict every cell with more."""
    fitted = observed[observed["workers"] <= largest_fitted]
    beyond = observed[observed["workers"] > largest_fitted]
    if beyond.empty or fitted["workers"].nunique() < 1:
        return None
    rows = []
    for workers in sorted(beyond["workers"].unique()):
        held = holdout(pd.concat([fitted, beyond[beyond["workers"] == workers]], ignore_index=True))
        if held is not None:
            rows.append(held)
    return pd.concat(rows, ignore_index=True) if rows else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, help="a study's results directory holding runs.csv")
    parser.add_argument("--hold-out-from", type=int, help="also fit on cells of up to this many workers and "
                        "predict each larger worker count")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="scaling-prediction-") as scratch:
        study_dir = args.results or run_default_study(Path(scratch))
        runs = pd.read_csv(study_dir / "runs.csv")
    observed = step_rows(runs)
    model = fit_step_time(observed)
    print(f"\n{len(observed)} cells of {study_dir}; model fitted on all of them: rms error {model.relative_rms:.1%}")
    tables = {"largest worker count held out": holdout(observed)}
    if args.hold_out_from is not None:
        tables[f"fitted on up to {args.hold_out_from} workers"] = held_out_table(observed, args.hold_out_from)
    for title, table in tables.items():
        print(f"\n{title}:")
        if table is None or table.empty:
            print("  not possible: it needs cells at 3+ worker counts")
            continue
        print("| cell | workers | batch per worker | measured (ms/step) | predicted (ms/step) | 95 % interval | "
              "predicted / measured |")
        print("|---|---|---|---|---|---|---|")
        for row in table.itertuples():
            print(f"| {row.cell} | {row.workers:g} | {row.per_worker_batch:g} | {row.time_per_step_s * 1e3:.2f} | "
                  f"{row.predicted_s * 1e3:.2f} | {row.predicted_low_s * 1e3:.2f} to {row.predicted_high_s * 1e3:.2f} "
                  f"| {row.predicted_s / row.time_per_step_s:.2f} |")


if __name__ == "__main__":
    main()
