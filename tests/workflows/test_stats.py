"""The report's estimators and bootstrap against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from workflows.report.stats import (
    bootstrap_ci,
    expanded_confidence,
    iqm,
    optimality_gap,
    performance_profile,
    probability_of_improvement,
    resample,
    stratified_bootstrap_ci,
    student_t_quantile,
)


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
    estimate = stratified_bootstrap_ci([0.0, 10.0], statistic=np.mean, replicates=4000, expand=False)
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
    pooled = stratified_bootstrap_ci(values, expand=False)
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


def test_optimality_gap_counts_only_the_shortfall_below_the_target():
    # Shortfalls below 100: 50, 0 (120 is above), 10, 0 -> mean 15.
    assert optimality_gap([50.0, 120.0, 90.0, 100.0]) == pytest.approx(15.0)
    assert optimality_gap([30.0, 70.0], target=50.0) == pytest.approx(10.0)
    np.testing.assert_allclose(optimality_gap(np.array([[100.0, 0.0], [80.0, 90.0]]), axis=-1), [50.0, 15.0])


def test_performance_profile_is_the_fraction_of_runs_strictly_above_each_score():
    np.testing.assert_allclose(performance_profile([10.0, 20.0, 30.0, 40.0], [0.0, 15.0, 40.0]), [1.0, 0.75, 0.0])
    batched = performance_profile(np.array([[10.0, 20.0], [30.0, 40.0]]), [25.0])
    np.testing.assert_allclose(batched, [[0.0], [1.0]])


def test_probability_of_improvement_counts_ties_half():
    # 1 vs (2, 2): 0, 0; 2 vs (2, 2): 1/2, 1/2; 3 vs (2, 2): 1, 1 -> 3 of 6.
    assert probability_of_improvement([1.0, 2.0, 3.0], [2.0, 2.0]) == pytest.approx(0.5)
    # 3 vs (1, 2, 3): 1 + 1 + 1/2; 4 vs (1, 2, 3): 3 -> 5.5 of 6.
    assert probability_of_improvement([3.0, 4.0], [1.0, 2.0, 3.0]) == pytest.approx(5.5 / 6)
    assert probability_of_improvement([5.0, 6.0], [1.0, 2.0]) == 1.0
    assert probability_of_improvement([1.0, 2.0], [5.0, 6.0]) == 0.0
    assert probability_of_improvement([7.0, 7.0], [7.0]) == 0.5


def test_student_t_quantiles_match_the_tables():
    for degrees, table in ((1, 12.706), (2, 4.303), (4, 2.776), (10, 2.228), (30, 2.042)):
        assert student_t_quantile(0.975, degrees) == pytest.approx(table, abs=2e-3)
    # Many degrees of freedom: the normal quantile, so the level is not widened.
    assert expanded_confidence(0.95, 10_000) == pytest.approx(0.95, abs=1e-3)
    assert expanded_confidence(0.95, 4) == pytest.approx(0.9945, abs=1e-3)


def test_expansion_scales_each_strata_spread_around_its_mean():
    values = np.array([0.0, 10.0])
    plain, expanded = resample([values], replicates=50, seed=1, expand=False)[0], resample([values], 50, 1)[0]
    # Same draws, moved away from the mean 5 by sqrt(2 / 1).
    np.testing.assert_allclose(expanded, 5.0 + np.sqrt(2.0) * (plain - 5.0))
    # A single run has no spread to expand.
    np.testing.assert_allclose(resample([[3.0]], replicates=4)[0], 3.0)


def test_one_run_per_stratum_gives_no_interval():
    estimate = bootstrap_ci([[1.0], [2.0]], lambda groups: groups[0].mean(-1) - groups[1].mean(-1))
    assert estimate.value == -1.0 and np.isnan(estimate.low) and np.isnan(estimate.high)


def test_expanded_interval_keeps_its_promise_on_identical_learners_where_the_plain_one_does_not():
    # Two learners with the same score distribution, 3 seeds each: how often does the 95% interval of the
    # gap exclude 0 (a false "ahead")? It should be close to 5%.
    rng = np.random.default_rng(0)

    def gap(groups):
        return groups[0].mean(-1) - groups[1].mean(-1)

    trials = [(rng.normal(size=3), rng.normal(size=3)) for _ in range(300)]
    false_alarms = {
        expand: np.mean(
            [
                bootstrap_ci(pair, gap, replicates=2000, seed=i, expand=expand).excludes(0.0)
                for i, pair in enumerate(trials)
            ]
        )
        for expand in (False, True)
    }
    assert false_alarms[False] > 0.15  # the plain percentile bootstrap: about 20%
    assert false_alarms[True] < 0.11  # expanded: about 9% at 3 seeds (5% from 4 on)
