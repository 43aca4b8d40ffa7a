"""The study's answer: which worker count and batch size reach the target fastest, and
which for the fewest GPU-hours, measured where the study ran them and predicted where
it did not.

    python -m analysis.answer_figures results/<study>/runs.csv --out results/<study>

writes answer.md (printed at the end of every run), answer.html (in the report),
answer.json, predictions.csv and holdout.csv. Per group of cells that share every grid
value but batch size, workers and replicate (seed, repeat):

- the critical batch B_crit, fitted to the cells' steps to target over their global
  batch (analysis/critical_batch.py), beside the gradient noise scale B_simple the
  cells measured while training;
- the time per step, fitted as compute plus ring-allreduce communication to the cells'
  steady-state step times (analysis/scaling_model.py); its accuracy is measured by
  fitting without the largest worker count and predicting it (holdout.csv);
- predictions of time per step, throughput, efficiency and time to target for worker
  counts up to 4x the largest run and per-worker batches between the smallest and
  largest run; time to target = predicted steps to target x predicted time per step;
- the answer: the fastest and the cheapest configuration over the measured cells and
  the predicted ones not measured, each with its 95 % interval.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.critical_batch import CriticalBatchFit, fit_critical_batch
from analysis.metrics import REPLICATE_AXES
from analysis.scaling_model import Choice, StepTimeModel, choose, fit_step_time, holdout, in_money, predict
from analysis.tables import FINISHED_STATUSES, finished, grid_axes_of

GROUP_EXCLUDED_AXES = ("batch_size", "gpus", *REPLICATE_AXES)
TARGET_AXES = ("target_accuracy", "target_loss")  # as grid axes: one fastest and one cheapest per target
PREDICT_WORKERS_FACTOR = 4  # predict up to this many times the largest worker count run
LOW_GPU_UTILIZATION = 0.5  # a cell whose GPUs were busy less than this fraction of the time is named
LOW_MEMORY_USE = 0.25  # ... that used less than this fraction of the memory it asked for
HIGH_TIME_LIMIT_USE = 0.9  # ... that ran longer than this fraction of its time limit


@dataclass
class GroupAnswer:
    """What one group of cells (same values of every other grid axis) says."""

    group: dict[str, Any]
    cells: int
    critical_batch: CriticalBatchFit | None
    noise_scale: float | None  # B_simple, median over the group's cells that measured it
    step_model: StepTimeModel | None
    step_model_problem: str | None
    measured: pd.DataFrame
    predicted: pd.DataFrame
    held_out: pd.DataFrame | None


@dataclass
class TargetChoice:
    """The fastest and the cheapest configuration to one target, over the groups that share it."""

    target: dict[str, Any]  # the target axes' values, e.g. {"target_accuracy": 0.9}
    fastest: Choice | None
    cheapest: Choice | None
    fastest_group: dict[str, Any] = field(default_factory=dict)
    cheapest_group: dict[str, Any] = field(default_factory=dict)


@dataclass
class StudyAnswer:
    study: str
    target: str
    fastest: Choice | None
    cheapest: Choice | None
    fastest_group: dict[str, Any] = field(default_factory=dict)
    cheapest_group: dict[str, Any] = field(default_factory=dict)
    groups: list[GroupAnswer] = field(default_factory=list)
    cells: int = 0
    unfinished: int = 0  # cells neither complete nor diverged (failed, broken, not run yet)
    wasteful: list[str] = field(default_factory=list)  # cells that left what they were given idle, and how
    # Where the target is a grid axis, the choices per target (fastest and cheapest above stay None: the times
    # to different targets do not compare).
    per_target: list[TargetChoice] = field(default_factory=list)


def group_axes(runs: pd.DataFrame) -> list[str]:
    return [axis for axis in grid_axes_of(runs) if axis not in GROUP_EXCLUDED_AXES and axis in runs.columns]


def numbers(cells: pd.DataFrame, column: str) -> pd.Series:
    """A column as floats, missing values NaN (collect's nullable integers hold pd.NA); all NaN when
    the table lacks it (a runs.csv written before it existed)."""
    return pd.to_numeric(cells[column], errors="coerce").astype(float) if column in cells.columns \
        else pd.Series(np.nan, index=cells.index)


def measured_rows(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per (workers, per-worker batch) that finished: time to target and GPU-hours, the
    mean over replicates that reached the target (NaN when none did)."""
    finished_cells = finished(cells)
    frame = pd.DataFrame({
        "cell": finished_cells["cell"],
        "workers": pd.to_numeric(finished_cells["world_size"], errors="coerce"),
        "global_batch": pd.to_numeric(finished_cells["global_batch"], errors="coerce"),
        "time_to_target_s": pd.to_numeric(finished_cells["time_to_target_s"], errors="coerce"),
        "steps_to_target": pd.to_numeric(finished_cells["steps_to_target"], errors="coerce"),
    }).dropna(subset=["workers", "global_batch"])
    frame["per_worker_batch"] = frame["global_batch"] / frame["workers"]
    grouped = frame.groupby(["workers", "per_worker_batch"], as_index=False).agg(
        cell=("cell", lambda names: " ".join(sorted(names))), global_batch=("global_batch", "first"),
        time_to_target_s=("time_to_target_s", "mean"), steps_to_target=("steps_to_target", "mean"))
    grouped["gpu_hours"] = grouped["workers"] * grouped["time_to_target_s"] / 3600
    grouped["cost"] = grouped["gpu_hours"] * group_price(cells)
    return grouped


def group_price(cells: pd.DataFrame) -> float:
    """The price per GPU-hour of the group's hardware (its partition's, from the profile); NaN when unpriced."""
    prices = numbers(cells, "price_per_gpu_hour").dropna().unique()
    return float(prices[0]) if len(prices) == 1 else math.nan


def step_rows(cells: pd.DataFrame) -> pd.DataFrame:
    """The scaling model's observations: finished cells with a steady-state step time."""
    finished_cells = finished(cells)
    workers = pd.to_numeric(finished_cells["world_size"], errors="coerce")
    frame = pd.DataFrame({
        "cell": finished_cells["cell"],
        "per_worker_batch": pd.to_numeric(finished_cells["global_batch"], errors="coerce") / workers,
        "workers": workers,
        "workers_per_node": (pd.to_numeric(finished_cells["workers_per_node"], errors="coerce")
                             if "workers_per_node" in finished_cells else workers).fillna(workers),
        "gradient_bytes": pd.to_numeric(finished_cells["gradient_bytes"], errors="coerce"),
        "oversubscription": pd.to_numeric(finished_cells["oversubscription"], errors="coerce"),
        "time_per_step_s": pd.to_numeric(finished_cells["step_time_s"], errors="coerce"),
    })
    return frame.dropna().reset_index(drop=True)


def candidates(cells: pd.DataFrame, observed: pd.DataFrame) -> pd.DataFrame:
    """(workers, per-worker batch) pairs to predict: powers of two up to 4x the largest worker
    count and within the measured batches, plus every measured pair; each with the CPU
    oversubscription it would have, placed as the study's cells were (one node if they all
    ran on one, else as many per node as the fullest node held)."""
    workers_run = sorted({int(n) for n in observed["workers"]})
    batches_run = sorted({float(b) for b in observed["per_worker_batch"]})
    top = max(workers_run) * PREDICT_WORKERS_FACTOR
    workers = sorted(set(workers_run) | {2**k for k in range(int(math.log2(top)) + 1)})
    low, high = min(batches_run), max(batches_run)
    batches = sorted(set(batches_run) | {float(2**k) for k in range(int(math.log2(high)) + 1) if low <= 2**k <= high})
    gpus_per_node = numbers(cells, "gpus_per_node").max()  # the partition's, on Slurm: placement beyond what ran
    one_node = numbers(cells, "nodes").fillna(1).max() <= 1 and not np.isfinite(gpus_per_node)
    per_node = gpus_per_node if np.isfinite(gpus_per_node) else numbers(cells, "workers_per_node").max()
    threads = numbers(cells, "threads_per_worker").median()
    cpus = numbers(cells, "cpus").median()
    on_cpu = not cells.get("device", pd.Series(dtype=object)).astype(str).str.startswith("cuda").any()
    gradient_bytes = float(observed["gradient_bytes"].median())

    def rho(n: int) -> float:
        if not on_cpu or not (np.isfinite(threads) and np.isfinite(cpus)) or cpus <= 0:
            return 1.0
        local = n if one_node or not np.isfinite(per_node) else min(n, int(per_node))
        return max(1.0, local * threads / cpus)

    rows = [{"workers": n, "per_worker_batch": b, "gradient_bytes": gradient_bytes,
             "workers_per_node": n if one_node or not np.isfinite(per_node) else min(n, int(per_node)),
             "oversubscription": rho(n), "oversubscription_1": rho(1)} for n in workers for b in batches]
    frame = pd.DataFrame(rows)
    measured_global = observed["per_worker_batch"] * observed["workers"]
    frame["extrapolated"] = (frame["workers"] > max(workers_run)) | (
        frame["workers"] * frame["per_worker_batch"] > measured_global.max()) | (
        frame["workers"] * frame["per_worker_batch"] < measured_global.min())
    return frame


def answer_group(cells: pd.DataFrame, group: dict[str, Any]) -> GroupAnswer:
    measured = measured_rows(cells)
    finished_cells = finished(cells)  # the fit leaves out those that did not reach the target
    critical = fit_critical_batch(numbers(finished_cells, "global_batch").tolist(),
                                  numbers(finished_cells, "steps_to_target").tolist())
    noise = numbers(cells, "noise_scale").dropna()
    observed = step_rows(cells)
    model, problem, predicted, held_out = None, None, pd.DataFrame(), None
    if observed.empty:
        problem = "no finished cell has a steady-state step time"
    else:
        try:
            model = fit_step_time(observed)
        except ValueError as error:
            problem = str(error)
    if model is not None:
        predicted = predict(model, critical, candidates(cells, observed))
        price = group_price(cells)
        for name in ("", "_low", "_high"):
            predicted[f"cost{name}"] = predicted[f"gpu_hours{name}"] * price
        held_out = holdout(observed)
    return GroupAnswer(group, len(cells), critical, float(noise.median()) if len(noise) else None, model, problem,
                       measured, predicted, held_out)


def answer_study(runs: pd.DataFrame, study: str) -> StudyAnswer:
    axes = group_axes(runs)
    groups: list[GroupAnswer] = []
    if axes:
        for values, cells in runs.groupby(axes, dropna=False, sort=True):
            key = values if isinstance(values, tuple) else (values,)
            groups.append(answer_group(cells, dict(zip(axes, key))))
    elif len(runs):
        groups.append(answer_group(runs, {}))
    unfinished = int((~runs["status"].isin(FINISHED_STATUSES)).sum()) if len(runs) else 0
    answer = StudyAnswer(study, target_text(runs), None, None, groups=groups, cells=len(runs), unfinished=unfinished,
                         wasteful=wasteful_cells(runs))
    by_target: dict[tuple[tuple[str, Any], ...], list[GroupAnswer]] = {}
    for group in groups:
        by_target.setdefault(tuple((axis, group.group[axis]) for axis in TARGET_AXES if axis in group.group),
                             []).append(group)
    best = [best_over(dict(target), members) for target, members in by_target.items()]
    if len(best) > 1:
        answer.per_target = best
    elif best:
        answer.fastest, answer.cheapest = best[0].fastest, best[0].cheapest
        answer.fastest_group, answer.cheapest_group = best[0].fastest_group, best[0].cheapest_group
    return answer


def best_over(target: dict[str, Any], groups: list[GroupAnswer]) -> TargetChoice:
    """The fastest and the cheapest over the groups (partitions, optimizers, ...): the cheapest in money
    where every group is priced, else in GPU-hours."""
    chosen = TargetChoice(target, None, None)
    choices = [(group, *choose(group.measured, group.predicted)) for group in groups]
    for group, fastest, _ in choices:
        if fastest is not None and (chosen.fastest is None or fastest.time_to_target_s < chosen.fastest.time_to_target_s):
            chosen.fastest, chosen.fastest_group = fastest, group.group
    cheapest_choices = [(group, cheapest) for group, _, cheapest in choices if cheapest is not None]
    money = in_money([cheapest.cost for _, cheapest in cheapest_choices])
    for group, cheapest in cheapest_choices:
        spent = cheapest.cost if money else cheapest.gpu_hours
        if chosen.cheapest is None or spent < (chosen.cheapest.cost if money else chosen.cheapest.gpu_hours):
            chosen.cheapest, chosen.cheapest_group = cheapest, group.group
    return chosen


def wasteful_cells(runs: pd.DataFrame) -> list[str]:
    """"cell: why" for each cell that left its GPUs mostly idle, asked for more than 4x the memory
    it used, or ran close to its time limit (runs.csv's usage columns)."""
    def column(name: str) -> pd.Series:
        return pd.to_numeric(runs[name], errors="coerce") if name in runs else pd.Series(np.nan, index=runs.index)

    gpu, memory, time_limit = column("gpu_utilization"), column("memory_used_fraction"), \
        column("time_limit_used_fraction")
    lines = []
    for index, cell in runs["cell"].items() if "cell" in runs else []:
        why = []
        if gpu[index] < LOW_GPU_UTILIZATION:
            why.append(f"its GPUs were busy {gpu[index]:.0%} of the time (input or communication holds it back)")
        if memory[index] < LOW_MEMORY_USE:
            why.append(f"it used {memory[index]:.0%} of the memory it asked for (ask for less)")
        if time_limit[index] > HIGH_TIME_LIMIT_USE:
            why.append(f"a job ran {time_limit[index]:.0%} of its time limit (it was stopped there, or nearly)")
        if why:
            lines.append(f"{cell}: {'; '.join(why)}")
    return lines


def target_text(runs: pd.DataFrame) -> str:
    losses = numbers(runs, "target_loss").dropna().unique() if "target_loss" in runs else []
    on_loss = len(losses) > 0
    targets = losses if on_loss else numbers(runs, "target_accuracy").dropna().unique()
    patience = numbers(runs, "patience").dropna().unique()
    if len(targets) != 1:
        return f"the cells' target {'loss' if on_loss else 'accuracy'}"
    held = f", held {int(patience[0])} epochs" if len(patience) == 1 and patience[0] > 1 else ""
    return f"validation {'loss' if on_loss else 'accuracy'} {targets[0]:g}{held}"


# ----------------------------------------------------------------------------- text

def workers_text(workers: float) -> str:
    """"1 worker", "8 workers" (from numbers of any type, numpy's included)."""
    return f"{float(workers):g} worker{'' if float(workers) == 1 else 's'}"


def seconds(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    if value >= 3600:
        return f"{value / 3600:.2f} h"
    if value >= 60:
        return f"{value / 60:.1f} min"
    return f"{value:.3g} s"


def model_text(model: StepTimeModel) -> str:
    """The fitted step time in words: compute, then each link's latency and bandwidth where identified."""
    values, known = dict(zip(model.names, model.values)), dict(zip(model.names, model.identified))
    links = []
    for link, name in (("in_node", "inside a node"), ("across_nodes", "across nodes")):
        if link == "across_nodes" and model.across_as_in_node:
            continue
        latency, beta = f"latency_{link}_s", f"seconds_per_byte_{link}"
        if not (known[latency] or known[beta]):
            continue
        bandwidth = model.bandwidth_bytes_per_s(link)
        parts = [f"{values[latency] * 1e6:.3g} us/hop" if known[latency] else "latency not identified",
                 "bandwidth not identified" if not known[beta] else
                 f"{bandwidth / 1e9:.3g} GB/s" if math.isfinite(bandwidth) else "no measurable cost per byte"]
        links.append(f"{name} {', '.join(parts)}")
    communication = f" + {model.form.latency} allreduce ({'; '.join(links)})" if links else ""
    overlap = f", overlapping with gamma {model.overlap:.3g}" if model.form.overlap else ""
    return (f"compute {values['compute_fixed_s'] * 1e3:.3g} ms + {values['compute_per_sample_s'] * 1e6:.3g} "
            f"us/sample{communication}{overlap} (all x CPU oversubscription where workers share cores)")


def choice_line(label: str, choice: Choice | None, group: dict[str, Any]) -> str:
    if choice is None:
        return f"- **{label}:** none: no cell reached the target and no prediction could be made."
    where = ", ".join(f"{axis} {value}" for axis, value in group.items())
    config = (f"{workers_text(choice.workers)} x batch {choice.per_worker_batch:g} "
              f"(global {choice.global_batch:g}){', ' + where if where else ''}")
    source = f"measured, cell {choice.cell}" if choice.source == "measured" else "predicted, not run"
    interval = "" if choice.source == "measured" else \
        f" (95 % interval {seconds(choice.low)} to {seconds(choice.high)})"
    money = f", cost {choice.cost:.3g} (at {choice.cost / choice.gpu_hours:.3g} per GPU-hour)" \
        if math.isfinite(choice.cost) and choice.gpu_hours > 0 else ""
    return (f"- **{label}:** {config}: {seconds(choice.time_to_target_s)} of training to target{interval}, "
            f"{choice.gpu_hours:.3g} GPU-hours{money}; {source}.")


def group_lines(group: GroupAnswer) -> list[str]:
    name = ", ".join(f"{axis} {value}" for axis, value in group.group.items()) or "all cells"
    lines = [f"### {name}"]
    crit = group.critical_batch
    if crit is None:
        lines.append("- Critical batch: not fitted (it needs cells at 3 or more global batch sizes that reached "
                     "the target).")
    else:
        low, high = crit.critical_batch_interval
        bound = {"above": " (still in perfect scaling: B_crit is beyond the largest batch run)",
                 "below": " (no gain from batch at all over the batches run)"}.get(crit.at_bound or "", "")
        lines.append(f"- Critical batch B_crit = {crit.critical_batch:.3g} samples (95 % interval {low:.3g} to "
                     f"{high:.3g}){bound}, from the steps to target of {crit.points} cells; "
                     f"S_min = {crit.steps_min:.3g} steps.")
    lines.append(f"- Gradient noise scale B_simple = {group.noise_scale:.3g} samples (median over the cells of 2+ "
                 "workers, measured while training)." if group.noise_scale is not None else
                 "- Gradient noise scale: not measured (it needs cells of 2+ workers).")
    model = group.step_model
    if model is None:
        lines.append(f"- Step-time model: not fitted ({group.step_model_problem}).")
    else:
        lines.append(f"- Step time = {model_text(model)}; fitted to {model.cells} cells, rms error "
                     f"{model.relative_rms:.1%}. Form: {model.form.text()}, {model.form_reason}."
                     + "".join(f" Note: {note}" for note in model.notes))
    if group.held_out is not None and len(group.held_out):
        errors = ", ".join(f"batch {row.per_worker_batch:g}: {row.relative_error:+.0%}"
                           for row in group.held_out.itertuples())
        top = int(group.held_out["workers"].max())
        lines.append(f"- Held out {top} workers (fitted without them): prediction error per cell {errors}.")
    else:
        lines.append("- Held-out check: not possible: it needs cells at 3 or more worker counts, so that the fit "
                     "without the largest still has one above 1 worker to learn communication from.")
    return lines


def answer_markdown(answer: StudyAnswer, not_drawn: Sequence[str] = ()) -> str:
    """The answer as Markdown; `not_drawn`: the figures the study's data could not fill, and why."""
    lines = [f"## {answer.study}: what to run to reach {answer.target}", ""]
    if answer.unfinished:
        lines += [f"(Partial: {answer.unfinished} of {answer.cells} cells have not finished; this answer uses the "
                  "others. Run the same command again to finish them.)", ""]
    if answer.per_target:
        for chosen in answer.per_target:
            target = ", ".join(f"{axis} {value}" for axis, value in chosen.target.items())
            lines += [f"To {target}:", choice_line("Fastest", chosen.fastest, chosen.fastest_group),
                      choice_line("Cheapest", chosen.cheapest, chosen.cheapest_group), ""]
    else:
        lines += [choice_line("Fastest", answer.fastest, answer.fastest_group),
                  choice_line("Cheapest", answer.cheapest, answer.cheapest_group), ""]
    for group in answer.groups:
        lines.extend([*group_lines(group), ""])
    lines.append("Time to target is training time (steps, without validation or start-up); GPU-hours = workers x "
                 "that time. Predictions: steps from the B_crit fit x time per step from the step-time model; "
                 "see docs/answer.md, 'Reading the answer'.")
    if answer.wasteful:
        lines += ["", "Cells that left what they were given idle:", *(f"- {line}" for line in answer.wasteful)]
    if not_drawn:
        lines += ["", "Figures not drawn, as this study's data cannot fill them:",
                  *(f"- {line}" for line in not_drawn)]
    return "\n".join(lines) + "\n"


def answer_html(markdown: str) -> str:
    """A standalone page for the HTML report: the Markdown's lines, escaped, bold kept."""
    body = []
    for line in markdown.splitlines():
        text = html.escape(line)
        while "**" in text:
            text = text.replace("**", "<b>", 1).replace("**", "</b>", 1)
        if line.startswith("## "):
            body.append(f"<h2>{text[3:]}</h2>")
        elif line.startswith("### "):
            body.append(f"<h3>{text[4:]}</h3>")
        elif line.startswith("- "):
            body.append(f"<p>&bull; {text[2:]}</p>")
        elif line:
            body.append(f"<p>{text}</p>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>The answer</title></head>"
            "<body style='font-family: sans-serif; max-width: 60em'>" + "\n".join(body) + "</body></html>\n")


def answer_json(answer: StudyAnswer) -> dict[str, Any]:
    def group_json(group: GroupAnswer) -> dict[str, Any]:
        crit = group.critical_batch
        model = group.step_model
        return {"group": group.group, "cells": group.cells,
                "critical_batch": None if crit is None else {
                    "value": crit.critical_batch, "interval95": list(crit.critical_batch_interval),
                    "steps_min": crit.steps_min, "points": crit.points, "at_bound": crit.at_bound},
                "noise_scale": group.noise_scale,
                "step_model": None if model is None else {
                    "parameters": dict(zip(model.names, model.values)), "identified": list(model.identified),
                    "form": asdict(model.form), "overlap": model.overlap, "form_reason": model.form_reason,
                    "across_as_in_node": model.across_as_in_node, "noise_scale": model.noise_scale,
                    "cells": model.cells, "relative_rms": model.relative_rms, "notes": list(model.notes)},
                "step_model_problem": group.step_model_problem,
                "holdout": None if group.held_out is None else group.held_out.to_dict(orient="records")}

    def choice_json(choice: Choice | None, group: dict[str, Any]) -> dict[str, Any] | None:
        return None if choice is None else {**asdict(choice), "group": group}

    return {"study": answer.study, "target": answer.target, "cells": answer.cells, "unfinished": answer.unfinished,
            "wasteful": answer.wasteful,
            "fastest": choice_json(answer.fastest, answer.fastest_group),
            "cheapest": choice_json(answer.cheapest, answer.cheapest_group),
            "per_target": [{"target": chosen.target, "fastest": choice_json(chosen.fastest, chosen.fastest_group),
                            "cheapest": choice_json(chosen.cheapest, chosen.cheapest_group)}
                           for chosen in answer.per_target],
            "groups": [group_json(group) for group in answer.groups]}


def write_answer(runs: pd.DataFrame, out_dir: Path, study: str) -> StudyAnswer:
    answer = answer_study(runs, study)
    write_answer_files(answer, out_dir)
    return answer


def write_answer_files(answer: StudyAnswer, out_dir: Path, not_drawn: Sequence[str] = ()) -> None:
    """answer.md, answer.html, answer.json, predictions.csv and holdout.csv."""
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = answer_markdown(answer, not_drawn)
    (out_dir / "answer.md").write_text(markdown)
    (out_dir / "answer.html").write_text(answer_html(markdown))
    (out_dir / "answer.json").write_text(
        json.dumps(_finite(answer_json(answer)), indent=2, default=_json_default, allow_nan=False) + "\n")
    for name, tables in (("predictions.csv", [(group, group.predicted) for group in answer.groups]),
                         ("holdout.csv", [(group, group.held_out) for group in answer.groups])):
        frames = [table.assign(**group.group) for group, table in tables if table is not None and len(table)]
        (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()).to_csv(out_dir / name, index=False)


def _finite(value: Any) -> Any:
    """NaN and infinities become null, so answer.json is strict JSON (an open interval's end: null)."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    if isinstance(value, (float, np.floating)) and not math.isfinite(float(value)):
        return None
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        number = value.item()
        return None if isinstance(number, float) and not math.isfinite(number) else number
    if isinstance(value, np.bool_):
        return bool(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
