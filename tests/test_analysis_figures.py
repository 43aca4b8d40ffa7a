"""What the figures draw: labelled axes, one line per cell or batch size, and the
numbers of the runs and epochs tables, not only a file that exists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from test_analysis_collect import study_dir  # noqa: F401  (the fixture)

from analysis.collect import collect_study
from analysis.figures import (
    WORKERS_LABEL,
    _accuracy_curves,
    accuracy_vs_time_figure,
    finished_runs,
    grid_axes_of,
    scaling_efficiency_figure,
    throughput_figure,
    time_to_accuracy_figure,
)


@pytest.fixture
def tables(study_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:  # noqa: F811
    runs, epochs = collect_study(study_dir)
    finished = finished_runs(runs, grid_axes_of(runs))
    return runs, epochs, finished


def data_lines(ax: Axes, style: str = "-") -> list[np.ndarray]:
    """The (x, y) points of every drawn line of a linestyle, legend proxies and empty lines left out."""
    return [line.get_xydata() for line in ax.lines if line.get_linestyle() == style and len(line.get_xdata()) > 0]


def only_axes(figure: Figure) -> Axes:
    axes = [ax for ax in figure.axes if ax.get_visible()]
    assert len(axes) == 1
    return axes[0]


def test_throughput_draws_each_batch_sizes_measured_line_and_its_ideal(tables):
    runs, _, finished = tables
    ax = only_axes(throughput_figure(finished))
    assert (ax.get_xlabel(), ax.get_ylabel()) == (WORKERS_LABEL, "Throughput (samples/s)")
    assert "training steps" in ax.figure.get_suptitle()
    measured = runs[runs["status"].isin(["complete", "diverged"])].set_index("cell")["throughput"]
    solid = np.array(sorted(map(tuple, np.concatenate(data_lines(ax, "-")))))
    # Batch 64 on 1 and 2 workers, batch 32 (diverged, no baseline) on 2: every finished cell once.
    expected = sorted([(1.0, measured["bs64-gpus1"]), (2.0, measured["bs64-gpus2"]), (2.0, measured["bs32-gpus2"])])
    np.testing.assert_allclose(solid, expected)
    ideal = data_lines(ax, "--")
    assert len(ideal) == 1  # only batch 64 has a complete 1-worker baseline
    np.testing.assert_allclose(ideal[0], [[1, measured["bs64-gpus1"]], [2, 2 * measured["bs64-gpus1"]]])


def test_scaling_efficiency_draws_percent_of_ideal(tables):
    runs, _, finished = tables
    ax = only_axes(scaling_efficiency_figure(finished))
    assert (ax.get_xlabel(), ax.get_ylabel()) == (WORKERS_LABEL, "Weak-scaling efficiency (%)")
    efficiency = runs.set_index("cell")["efficiency"]
    lines = data_lines(ax, "-")
    assert len(lines) == 1
    np.testing.assert_allclose(lines[0], [[1, 100 * efficiency["bs64-gpus1"]], [2, 100 * efficiency["bs64-gpus2"]]])


def test_accuracy_vs_time_draws_one_curve_per_finished_cell_on_the_steps_clock(tables):
    _, epochs, finished = tables
    ax = only_axes(accuracy_vs_time_figure(_accuracy_curves(epochs, finished), finished, 0.9))
    assert ax.get_xlabel() == "Time in training steps (s)"
    assert ax.get_ylabel() == "Validation accuracy (%)"
    curves = data_lines(ax, "-") + data_lines(ax, "--")
    expected = {}
    for cell in finished["cell"]:
        rows = epochs[(epochs["cell"] == cell) & epochs["val_accuracy"].notna()].sort_values("epoch")
        expected[cell] = rows[["train_time_s", "val_accuracy"]].to_numpy(dtype=float)
    assert len(curves) == len(expected) == 3
    for points in expected.values():
        assert any(drawn.shape == points.shape and np.allclose(drawn, points) for drawn in curves), points
    # The diverged cell is the dashed one.
    dashed = data_lines(ax, "--")
    assert len(dashed) == 1 and np.allclose(dashed[0], expected["bs32-gpus2"])


def test_time_to_accuracy_bars_are_the_runs_time_to_target(tables):
    runs, _, finished = tables
    ax = only_axes(time_to_accuracy_figure(finished, 0.9, 2))
    assert ax.get_ylabel() == "Time to target accuracy (s of training steps)"
    bars = [patch for patch in ax.patches if isinstance(patch, Rectangle) and patch.get_height() > 0]
    reached = runs["time_to_target_s"].dropna()
    assert sorted(bar.get_height() for bar in bars) == pytest.approx(sorted(reached))
    assert len(bars) == 1  # bs64-gpus1; bs64-gpus2 lost the target, bs32-gpus2 diverged


def test_repeats_are_drawn_as_one_mean_point_with_the_t_interval(tmp_path):
    from test_analysis_collect import write_repeated_study

    study = tmp_path / "repeats"
    write_repeated_study(study)
    runs, _ = collect_study(study)
    from analysis.figures import over_replicates

    figure = throughput_figure(over_replicates(finished_runs(runs, grid_axes_of(runs))))
    ax = only_axes(figure)  # the repeat axis is averaged, not a panel
    assert "Student's t" in figure.get_suptitle()
    (line,) = data_lines(ax, "-")
    np.testing.assert_allclose(line.tolist(), [[1, 100.0], [2, 160.0]])
    half_width = 4.302653 * 10.0 / np.sqrt(3)  # t(0.975, 2) · s / √n for 150, 170, 160
    bars = [segment for container in ax.containers for collection in container.lines[2]
            for segment in collection.get_segments()]
    assert any(np.allclose(segment, [[2, 160 - half_width], [2, 160 + half_width]], rtol=1e-5) for segment in bars)


def test_a_backend_axis_colours_the_lines_by_backend_with_a_panel_per_batch_size():
    rows = []
    for backend, speed in (("horovod", 1.0), ("ddp", 1.5)):
        for batch in (32, 64):
            for workers in (1, 2):
                rows.append({"cell": f"bs{batch}-gpus{workers}-backend_{backend}", "status": "complete",
                             "batch_size": batch, "gpus": workers, "backend": backend,
                             "throughput": speed * batch * workers ** 0.5, "throughput_ci95": 0.0,
                             "efficiency": workers ** -0.5, "time_to_target_s": 1.0})
    runs = pd.DataFrame(rows)
    runs.attrs["grid_axes"] = ["batch_size", "gpus", "backend"]
    figure = throughput_figure(finished_runs(runs, grid_axes_of(runs)))
    axes = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["batch_size=32", "batch_size=64"]
    (legend,) = figure.legends
    assert legend.get_title().get_text() == "Data-parallel backend"
    colours = {text.get_text(): handle.get_color() for text, handle in zip(legend.get_texts(), legend.legend_handles)}
    assert set(colours) == {"horovod", "ddp"} and colours["horovod"] != colours["ddp"]
    for ax, batch in zip(axes, (32, 64)):
        solid = [line for line in ax.lines if line.get_linestyle() == "-" and len(line.get_xdata()) > 0]
        assert len(solid) == 2  # one line per backend in each batch size's panel
        for line in solid:
            (backend,) = [name for name, colour in colours.items() if colour == line.get_color()]
            expected = runs[(runs["backend"] == backend) & (runs["batch_size"] == batch)].sort_values("gpus")
            np.testing.assert_allclose(line.get_xydata(), expected[["gpus", "throughput"]].to_numpy(dtype=float))
            # The panels share their y axis, and it holds every panel's points (batch 64's are the highest).
            assert ax.get_ylim()[0] == 0 and ax.get_ylim()[1] >= expected["throughput"].max()


def tick_label_texts(figure: Figure) -> list[str]:
    import io

    figure.savefig(io.BytesIO(), format="png")  # lays the ticks out and labels them
    return [label.get_text() for ax in figure.axes for axis in (ax.xaxis, ax.yaxis)
            for label in axis.get_ticklabels(minor=False) + axis.get_ticklabels(minor=True) if label.get_text()]


@pytest.mark.parametrize("scale", [1.0, 0.001, 10_000.0])
def test_log_axes_read_as_plain_numbers_even_within_one_decade(scale: float) -> None:
    """A loss between 3 and 9 on a log axis gets only minor ticks labelled, which matplotlib
    writes as 3 x 10^0 (and 0.003 as 3e-03); every label must read as a plain number."""
    from analysis.lab1_figures import loss_curves_figure

    runs = pd.DataFrame({"cell": ["bs8-gpus1", "bs16-gpus1"], "status": ["complete", "complete"],
                         "batch_size": [8, 16]})
    epochs = pd.DataFrame({"cell": ["bs8-gpus1"] * 5 + ["bs16-gpus1"] * 5, "batch_size": [8] * 5 + [16] * 5,
                           "epoch": [1, 2, 3, 4, 5] * 2, "steps": [12] * 5 + [6] * 5,
                           "train_loss": [scale * loss for loss in (9.0, 7.0, 5.0, 4.0, 3.0, 8.5, 7.5, 6.0, 5.0, 4.5)]})
    texts = tick_label_texts(loss_curves_figure(runs, epochs))
    assert texts, "no tick labels at all"
    for text in texts:
        float(text.replace("\N{MINUS SIGN}", "-"))  # raises on 3\times10^{0} and the like
        assert "e" not in text.lower(), text  # 3e-03 is a number, not a plain one
