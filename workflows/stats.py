"""Aggregate statistics for comparing learners over a few seeds.

Follows the rliable recommendations (Agarwal et al., 2021, "Deep RL at the
Edge of the Statistical Precipice"): report the interquartile mean (IQM) of
run scores, robust to one outlying seed yet less noisy than the median, with a
percentile bootstrap confidence interval obtained by resampling runs. When runs
come from several tasks (datasets), the bootstrap is stratified: runs are
resampled within each task, so every replicate keeps the grid's task mix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# Called as statistic(array, axis=-1), like np.mean.
Statistic = Callable[..., np.ndarray]


def iqm(values: Sequence[float] | np.ndarray, axis: int = -1) -> np.ndarray | float:
    """Interquartile mean: the mean of the values left after dropping the lowest and highest 25%.

    As in rliable (scipy's ``trim_mean(x, 0.25)``), ``floor(0.25 n)`` values are
    cut at each end, so for fewer than 4 runs the IQM equals the mean.
    """
    array = np.sort(np.asarray(values, dtype=np.float64), axis=axis)
    n = array.shape[axis]
    if n == 0:
        raise ValueError("the IQM of no values is undefined")
    cut = int(0.25 * n)
    kept = np.take(array, np.arange(cut, n - cut), axis=axis)
    result = kept.mean(axis=axis)
    return float(result) if np.ndim(result) == 0 else result


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a (low, high) confidence interval."""

    value: float
    low: float
    high: float


def stratified_bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    strata: Sequence[object] | None = None,
    statistic: Statistic = iqm,
    confidence: float = 0.95,
    replicates: int = 2000,
    seed: int = 0,
) -> Estimate:
    """``statistic`` of ``values`` with a percentile bootstrap CI over runs.

    ``statistic`` maps a (replicates, n) array to (replicates,) along the last
    axis (``iqm`` and ``np.mean`` both do). Each replicate draws, within every
    stratum, as many runs as the stratum holds, with replacement; ``strata=None``
    puts all runs in one stratum. Seeded, so a report rebuilt from the same runs
    shows the same interval.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError("expected a non-empty 1-D array of run scores")
    labels = (
        np.zeros(values.size, dtype=int)
        if strata is None
        else np.unique(np.asarray(strata, dtype=object).astype(str), return_inverse=True)[1]
    )
    rng = np.random.default_rng(seed)
    resampled = np.empty((replicates, values.size))
    column = 0
    for label in np.unique(labels):
        members = values[labels == label]
        draws = rng.integers(0, members.size, size=(replicates, members.size))
        resampled[:, column : column + members.size] = members[draws]
        column += members.size
    replicate_stats = np.asarray(statistic(resampled, axis=-1))
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(replicate_stats, [tail, 100.0 - tail])
    return Estimate(value=float(statistic(values)), low=float(low), high=float(high))
