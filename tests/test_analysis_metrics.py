import math
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from analysis.metrics import Throughput, speedup_and_efficiency, steady_state_throughput, time_to_accuracy


class TestSteadyStateThroughput:
    def test_drops_first_epoch_and_gives_normal_interval_of_the_mean(self) -> None:
        result = steady_state_throughput([100, 200, 300, 400])
        # Kept 200, 300, 400: mean 300, sample std 100, half-width 1.96 * 100 / sqrt(3).
        assert result.mean == pytest.approx(300.0)
        assert result.ci95 == pytest.approx(1.96 * 100 / math.sqrt(3))
        assert result.ci95 == pytest.approx(113.1607, abs=1e-3)
        assert result.epochs == 3

    def test_two_epochs_keep_only_the_second(self) -> None:
        result = steady_state_throughput([50.0, 80.0])
        assert result == Throughput(mean=80.0, ci95=result.ci95, epochs=1)
        assert math.isnan(result.ci95)

    def test_single_epoch_is_kept_with_unknown_interval(self) -> None:
        result = steady_state_throughput([123.0])
        assert result.mean == 123.0
        assert result.epochs == 1
        assert math.isnan(result.ci95)

    def test_no_epochs(self) -> None:
        result = steady_state_throughput([])
        assert math.isnan(result.mean) and math.isnan(result.ci95)
        assert result.epochs == 0

    def test_missing_values_are_ignored(self) -> None:
        result = steady_state_throughput([10.0, None, 300.0, float("nan"), 500.0])
        assert result.mean == pytest.approx(400.0)
        assert result.ci95 == pytest.approx(1.96 * math.sqrt(20000) / math.sqrt(2))
        assert result.epochs == 2

    def test_epoch_after_a_resume_is_also_a_startup_epoch(self) -> None:
        result = steady_state_throughput([100, 300, 150, 300], startup=[True, False, True, False])
        assert result.mean == pytest.approx(300.0)
        assert result.ci95 == pytest.approx(0.0)

    def test_all_startup_epochs_falls_back_to_all(self) -> None:
        result = steady_state_throughput([100, 200], startup=[True, True])
        assert result.mean == pytest.approx(150.0)

    def test_startup_flags_must_match(self) -> None:
        with pytest.raises(ValueError):
            steady_state_throughput([1.0, 2.0], startup=[True])


class TestTimeToAccuracy:
    times: ClassVar[list[float]] = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]

    def test_patience_one_is_first_epoch_at_or_above_target(self) -> None:
        accuracies = [0.5, 0.8, 0.9, 0.95, 0.97, 0.98]
        assert time_to_accuracy(self.times, accuracies, target=0.9, patience=1) == 30.0

    def test_patience_zero_and_none_mean_one(self) -> None:
        accuracies = [0.5, 0.8, 0.9, 0.95, 0.97, 0.98]
        assert time_to_accuracy(self.times, accuracies, target=0.9, patience=0) == 30.0
        assert time_to_accuracy(self.times, accuracies, target=0.9, patience=None) == 30.0

    def test_patience_two_reports_time_when_confirmed(self) -> None:
        accuracies = [0.5, 0.8, 0.9, 0.95, 0.97, 0.98]
        # Reached at epoch 3, confirmed at epoch 4: the course stops (and reports) at 40 s.
        assert time_to_accuracy(self.times, accuracies, target=0.9, patience=2) == 40.0

    def test_never_reached(self) -> None:
        assert time_to_accuracy(self.times, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], target=0.9, patience=1) is None

    def test_reached_then_lost_then_reached_again(self) -> None:
        accuracies = [0.91, 0.85, 0.92, 0.93, 0.80, 0.95]
        assert time_to_accuracy(self.times, accuracies, target=0.9, patience=1) == 10.0
        # The first streak has length 1; the second one (epochs 3-4) confirms at 40 s.
        assert time_to_accuracy(self.times, accuracies, target=0.9, patience=2) == 40.0
        assert time_to_accuracy(self.times, accuracies, target=0.9, patience=3) is None

    def test_missing_accuracy_breaks_a_streak(self) -> None:
        accuracies = [0.95, None, 0.95, 0.96, 0.1, 0.1]
        assert time_to_accuracy(self.times, accuracies, target=0.9, patience=2) == 40.0

    def test_no_target(self) -> None:
        assert time_to_accuracy(self.times, [0.99] * 6, target=None) is None
        assert time_to_accuracy(self.times, [0.99] * 6, target=float("nan")) is None

    def test_no_epochs(self) -> None:
        assert time_to_accuracy([], [], target=0.5, patience=2) is None


class TestSpeedupAndEfficiency:
    def test_against_matching_one_worker_baseline(self) -> None:
        runs = pd.DataFrame(
            {
                "batch_size": [32, 32, 32, 64, 64],
                "gpus": [1, 2, 4, 1, 2],
                "throughput": [100.0, 180.0, 300.0, 150.0, 300.0],
                "status": ["complete"] * 5,
            },
            index=[10, 11, 12, 13, 14],
        )
        result = speedup_and_efficiency(runs, ["batch_size", "gpus"])
        assert list(result.index) == [10, 11, 12, 13, 14]
        np.testing.assert_allclose(result["speedup"], [1.0, 1.8, 3.0, 1.0, 2.0])
        np.testing.assert_allclose(result["efficiency"], [1.0, 0.9, 0.75, 1.0, 1.0])

    def test_missing_or_unfinished_baseline_gives_nan(self) -> None:
        runs = pd.DataFrame(
            {
                "batch_size": [32, 64, 64, 128, 128],
                "gpus": [2, 1, 2, 1, 2],
                "throughput": [180.0, 150.0, 300.0, 90.0, 200.0],
                "status": ["complete", "failed", "complete", "diverged", "complete"],
            }
        )
        result = speedup_and_efficiency(runs, ["batch_size", "gpus"])
        # 32: no 1-worker run; 64: baseline failed; 128: baseline diverged.
        assert result["speedup"].isna().all()
        assert result["efficiency"].isna().all()

    def test_other_grid_axes_must_match_too(self) -> None:
        runs = pd.DataFrame(
            {
                "batch_size": [32, 32, 32, 32],
                "gpus": [1, 2, 1, 2],
                "warmup_epochs": [0, 0, 5, 5],
                "throughput": [100.0, 150.0, 200.0, 380.0],
                "status": ["complete"] * 4,
            }
        )
        result = speedup_and_efficiency(runs, ["batch_size", "gpus", "warmup_epochs"])
        np.testing.assert_allclose(result["speedup"], [1.0, 1.5, 1.0, 1.9])
        np.testing.assert_allclose(result["efficiency"], [1.0, 0.75, 1.0, 0.95])

    def test_workers_as_the_only_axis(self) -> None:
        runs = pd.DataFrame({"gpus": [1, 4], "throughput": [100.0, 360.0], "status": ["complete", "complete"]})
        result = speedup_and_efficiency(runs, ["gpus"])
        np.testing.assert_allclose(result["efficiency"], [1.0, 0.9])

    def test_course_lab3_numbers(self) -> None:
        runs = pd.DataFrame(
            {"batch_size": [128, 128], "gpus": [1, 4], "throughput": [615.4, 2388.8], "status": ["complete"] * 2}
        )
        result = speedup_and_efficiency(runs, ["batch_size", "gpus"])
        assert result["speedup"].iloc[1] == pytest.approx(3.88, abs=0.005)
        assert result["efficiency"].iloc[1] == pytest.approx(0.97, abs=0.005)


def test_across_replicates_is_the_mean_with_students_t_interval():
    from analysis.metrics import across_replicates

    values = [100.0, 110.0, 90.0]
    mean = sum(values) / 3
    s = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    summary = across_replicates([*values, None, float("nan")])  # missing runs are left out
    assert (summary.mean, summary.n) == (pytest.approx(100.0), 3)
    assert summary.ci95 == pytest.approx(4.302653 * s / math.sqrt(3), rel=1e-6)  # t(0.975, 2), from the table
    assert across_replicates([5.0, 7.0]).ci95 == pytest.approx(12.706205 * math.sqrt(2) / math.sqrt(2), rel=1e-6)
    assert math.isnan(across_replicates([5.0]).ci95) and across_replicates([]).n == 0
