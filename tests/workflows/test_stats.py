"""IQM and the stratified bootstrap CI against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from workflows.report.stats import iqm, stratified_bootstrap_ci


def test_iqm_drops_a_quarter_at_each_end():
    # 8 values: cut 2 at each end -> mean(3, 4, 5, 6) = 4.5, whatever the order.
    assert iqm([8, 1, 7, 2, 6, 3, 5, 4]) == pytest.approx(4.5)
    # 5 values: floor(1.25) = 1 cut at each end; sorted (1, 2, 3, 4, 100) -> mean(2, 3, 4) = 3.
    assert iqm([100, 1, 2, 3, 4]) == pytest.approx(3.0)


def test_iqm_of_fewer_than_four_runs_is_the_mean():
    assert iqm([1.0, 2.0, 6.0]) == pytest.approx(3.0)
    assert iqm([7.0]) == pytest.approx(7.0)


def test_iqm_along_an_axis():
    rows = np.array([[1, 2, 3, 4], [10, 20, 30, 40]])
    np.testing.assert_allclose(iqm(rows, axis=-1), [2.5, 25.0])


def test_bootstrap_of_two_runs_spans_their_range():
    # Resamples of (0, 10) are (0,0), (0,10), (10,0), (10,10): means 0, 5, 5, 10,
    # so the 95% interval runs from 0 to 10 and the point estimate is 5.
    estimate = stratified_bootstrap_ci([0.0, 10.0], statistic=np.mean, replicates=4000)
    assert estimate.value == pytest.approx(5.0)
    assert (estimate.low, estimate.high) == (pytest.approx(0.0), pytest.approx(10.0))


def test_identical_runs_give_a_zero_width_interval():
    estimate = stratified_bootstrap_ci([3.0, 3.0, 3.0])
    assert (estimate.value, estimate.low, estimate.high) == (3.0, 3.0, 3.0)


def test_stratification_keeps_each_task_represented():
    # Task A scores 0, task B scores 100. Stratified replicates always hold two of
    # each, so the IQM of (0, 0, 100, 100) = mean(0, 100) = 50 in every replicate.
    values, tasks = [0.0, 0.0, 100.0, 100.0], ["a", "a", "b", "b"]
    stratified = stratified_bootstrap_ci(values, strata=tasks)
    assert (stratified.low, stratified.value, stratified.high) == (50.0, 50.0, 50.0)
    # Without strata a replicate may draw only task A (or only B): the interval widens.
    pooled = stratified_bootstrap_ci(values)
    assert pooled.low < 50.0 < pooled.high


def test_bootstrap_is_seeded():
    values = np.random.default_rng(1).normal(size=12)
    assert stratified_bootstrap_ci(values, seed=3) == stratified_bootstrap_ci(values, seed=3)
    assert stratified_bootstrap_ci(values, seed=3) != stratified_bootstrap_ci(values, seed=4)


def test_interval_contains_the_point_estimate():
    values = np.random.default_rng(0).normal(50.0, 10.0, size=9)
    estimate = stratified_bootstrap_ci(values)
    assert estimate.low <= estimate.value <= estimate.high
    assert estimate.value == pytest.approx(iqm(values))


def test_family_verdict_ties_wins_and_separation():
    from workflows.report import CellSummary, verdict
    from workflows.report.stats import Estimate

    def cell(model_based: bool, mean: float, low: float, high: float) -> CellSummary:
        return CellSummary(
            "d",
            "mopo" if model_based else "iql",
            model_based,
            (),
            mean,
            0.0,
            Estimate(mean, low, high),
            mean,
            0.0,
            1.0,
            1.0,
        )

    assert verdict(cell(True, 100.0, 100.0, 100.0), cell(False, 100.0, 100.0, 100.0)) == "tied"
    assert (
        verdict(cell(True, 80.0, 75.0, 85.0), cell(False, 50.0, 40.0, 60.0)) == "model-based ahead (CIs do not overlap)"
    )
    assert verdict(cell(True, 50.0, 40.0, 70.0), cell(False, 60.0, 45.0, 75.0)).startswith(
        "model-free ahead (CIs overlap"
    )
