"""Statistics for comparing learners over a few seeds, written with numpy alone.

Follows the rliable recommendations (Agarwal et al., 2021, "Deep RL at the
Edge of the Statistical Precipice"): the interquartile mean (IQM) of run
scores, robust to one outlying seed yet less noisy than the median; the
optimality gap (how far runs fall short of a target score); performance
profiles (the fraction of runs above each score); the probability of
improvement P(X > Y); and percentile bootstrap confidence intervals in which
runs are resampled within their stratum (a learner, a dataset, a learner on a
dataset), so every replicate keeps the grid's make-up.

With a handful of seeds the plain percentile bootstrap is too narrow: it
resamples with the n-denominator variance and ignores that the spread itself
is estimated from n runs. Measured on identical normal distributions, the
plain 95% interval of a gap between two learners excluded 0 in 20% of trials
with 3 seeds each and 15% with 4 (at most 5% is what "95%" promises). The
intervals here are therefore *expanded* by default (Hesterberg, 2015, "What
teachers should know about the bootstrap"): each resampled run is moved away
from its stratum's mean by sqrt(n / (n - 1)), and the percentile level is
widened to the normal probability of Student's t quantile with
sum(n - 1) degrees of freedom. The same measurement then gives 21% with 2
seeds each, 9% with 3 and 5% with 4 or more (1000 trials each). Every bootstrap is seeded: a report rebuilt from
the same runs shows the same intervals.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

ArrayLike = Sequence[float] | np.ndarray
# Maps one array per stratum, each (replicates, n_stratum) or (n_stratum,), to a value per replicate.
GroupStatistic = Callable[[list[np.ndarray]], np.ndarray | float]
# Called as statistic(array, axis=-1), like np.mean.
Statistic = Callable[..., np.ndarray | float]

REPLICATES = 10_000  # the expanded level puts ~0.3% in each tail with 4 + 4 runs: enough replicates to land there
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a (low, high) confidence interval."""

    value: float
    low: float
    high: float

    def excludes(self, value: float) -> bool:
        return value < self.low or value > self.high


# ---------------------------------------------------------------- estimators


def iqm(values: ArrayLike, axis: int = -1) -> np.ndarray | float:
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
    return scalar_or_array(kept.mean(axis=axis))


def optimality_gap(values: ArrayLike, axis: int = -1, target: float = 100.0) -> np.ndarray | float:
    """Mean shortfall below ``target`` (100 = expert on the normalized scale); runs above it count as 0.

    Unlike a mean, it gives no credit for beating the target on some runs while missing it on others.
    """
    return scalar_or_array(np.maximum(target - np.asarray(values, dtype=np.float64), 0.0).mean(axis=axis))


def performance_profile(values: ArrayLike, thresholds: ArrayLike) -> np.ndarray:
    """The fraction of runs scoring above each threshold: runs on the last axis, batched over leading ones."""
    runs = np.asarray(values, dtype=np.float64)[..., None, :]
    return (runs > np.asarray(thresholds, dtype=np.float64)[:, None]).mean(axis=-1)


def probability_of_improvement(x: ArrayLike, y: ArrayLike) -> float:
    """P(X > Y) for a run of X and a run of Y drawn at random, ties counting half.

    This is the Mann-Whitney U statistic divided by n_x n_y: 0.5 when neither
    tends to score higher, 1 when every run of X beats every run of Y.
    """
    xs, ys = np.asarray(x, dtype=np.float64)[:, None], np.asarray(y, dtype=np.float64)[None, :]
    if xs.size == 0 or ys.size == 0:
        raise ValueError("P(X > Y) needs at least one run of each")
    return float(np.mean((xs > ys) + 0.5 * (xs == ys)))


def scalar_or_array(result: np.ndarray) -> np.ndarray | float:
    return float(result) if np.ndim(result) == 0 else result


# ---------------------------------------------------------------- the bootstrap


def resample(
    groups: Sequence[ArrayLike], replicates: int = REPLICATES, seed: int = 0, expand: bool = True
) -> list[np.ndarray]:
    """Bootstrap replicates of each group (stratum): a (replicates, n) array per group of n runs.

    A replicate draws, with replacement, as many runs from a stratum as it holds
    and from no other. With ``expand``, drawn runs are moved away from the
    stratum mean by sqrt(n / (n - 1)), so the replicates' spread is the sample's
    unbiased one rather than the n-denominator one.
    """
    rng = np.random.default_rng(seed)
    resampled = []
    for group in groups:
        members = np.asarray(group, dtype=np.float64)
        if members.ndim != 1 or members.size == 0:
            raise ValueError("every stratum needs a non-empty 1-D array of run scores")
        drawn = members[rng.integers(0, members.size, size=(replicates, members.size))]
        if expand and members.size > 1:
            center = members.mean()
            drawn = center + math.sqrt(members.size / (members.size - 1)) * (drawn - center)
        resampled.append(drawn)
    return resampled


def percentile_interval(point: float, replicate_values: ArrayLike, confidence: float = CONFIDENCE) -> Estimate:
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(np.asarray(replicate_values, dtype=np.float64), [tail, 100.0 - tail])
    return Estimate(value=float(point), low=float(low), high=float(high))


def bootstrap_ci(
    groups: Sequence[ArrayLike],
    statistic: GroupStatistic,
    confidence: float = CONFIDENCE,
    replicates: int = REPLICATES,
    seed: int = 0,
    expand: bool = True,
) -> Estimate:
    """``statistic`` of the groups with a stratified percentile bootstrap CI (expanded unless ``expand=False``).

    ``statistic`` receives one array per group: the runs themselves for the
    point estimate, (replicates, n) resamples for the interval. With no spread to
    resample (one run per group) the interval is undefined: NaN bounds.
    """
    arrays = [np.asarray(group, dtype=np.float64) for group in groups]
    point = float(statistic(arrays))
    degrees_of_freedom = sum(array.size - 1 for array in arrays)
    if degrees_of_freedom == 0:
        return Estimate(point, math.nan, math.nan)
    level = expanded_confidence(confidence, degrees_of_freedom) if expand else confidence
    replicate_values = np.asarray(statistic(resample(arrays, replicates, seed, expand)))
    return percentile_interval(point, replicate_values, level)


def stratified_bootstrap_ci(
    values: ArrayLike,
    strata: Sequence[object] | None = None,
    statistic: Statistic = iqm,
    confidence: float = CONFIDENCE,
    replicates: int = REPLICATES,
    seed: int = 0,
    expand: bool = True,
) -> Estimate:
    """``statistic`` of all ``values`` pooled, with runs resampled within their stratum (one if ``strata=None``).

    ``statistic`` maps a (replicates, n) array to (replicates,) along the last
    axis (``iqm``, ``optimality_gap`` and ``np.mean`` all do).
    """
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError("expected a non-empty 1-D array of run scores")
    labels = np.zeros(array.size, dtype=int) if strata is None else stratum_labels(strata)
    groups = [array[labels == label] for label in np.unique(labels)]
    return bootstrap_ci(
        groups, lambda arrays: statistic(np.concatenate(arrays, axis=-1), axis=-1), confidence, replicates, seed, expand
    )


def stratum_labels(strata: Sequence[object]) -> np.ndarray:
    return np.unique(np.asarray(strata, dtype=object).astype(str), return_inverse=True)[1]


# ---------------------------------------------------------------- the small-sample expansion


def expanded_confidence(confidence: float, degrees_of_freedom: int) -> float:
    """The normal coverage of Student's t quantile: the percentile level that acts like a t interval."""
    quantile = student_t_quantile(0.5 + confidence / 2.0, degrees_of_freedom)
    return math.erf(quantile / math.sqrt(2.0))


def student_t_quantile(probability: float, degrees_of_freedom: float) -> float:
    """The ``probability`` quantile (> 0.5) of Student's t, by bisection on its numerically integrated CDF."""
    nu = float(degrees_of_freedom)
    log_scale = math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)

    def cdf(x: float) -> float:
        grid = np.linspace(0.0, x, 4001)
        density = np.exp(log_scale - (nu + 1) / 2 * np.log1p(grid**2 / nu))
        return 0.5 + float((density[1:] + density[:-1]).sum() * (grid[1] - grid[0]) / 2)

    low, high = 0.0, 1.0
    while cdf(high) < probability:
        low, high = high, 2 * high
    for _ in range(50):
        middle = (low + high) / 2
        low, high = (middle, high) if cdf(middle) < probability else (low, middle)
    return (low + high) / 2
