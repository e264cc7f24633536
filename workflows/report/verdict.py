"""Model-based vs model-free: a verdict from an interval on the gap itself.

The gap is the score of the model-based side minus that of the model-free
side, with a stratified bootstrap CI (runs resampled within each learner, and
within each dataset when several are pooled; see ``stats`` for the
small-sample expansion). A side is one learner (each model-based learner
against each model-free one) or a whole family, whose best learner is picked
again in every bootstrap replicate, so the interval also carries the
uncertainty of *which* learner is best. On one dataset a learner's score is the
mean of its final scores over seeds (the report's headline); pooled over
datasets it is the IQM of all its runs (rliable's aggregate).

The verdict says "ahead" only when the interval excludes 0, "no clear
difference" when it covers 0, and gives no interval at all below
``MIN_SEEDS`` seeds per learner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from workflows.report.stats import Estimate, bootstrap_ci, iqm, probability_of_improvement

# Fewest seeds per learner (on every dataset involved) before an interval is shown. With 1 seed there is no
# spread to resample at all; with 2 a percentile bootstrap of a mean can only return the two seeds' range, and
# on identical learners the expanded 95% interval of the gap still excluded 0 in 21% of trials. From 3 seeds it
# did so in 9% (5% from 4 seeds on): 3 is the fewest at which the interval is close to what it claims.
MIN_SEEDS = 3
BOOTSTRAP_SEED = 0

MODEL_BASED_AHEAD = "model-based ahead"
MODEL_FREE_AHEAD = "model-free ahead"
NO_CLEAR_DIFFERENCE = "no clear difference"


@dataclass(frozen=True)
class Learner:
    """One side's candidate: a learner's final scores, one array per dataset (stratum)."""

    algo: str
    scores: tuple[np.ndarray, ...]

    @property
    def runs(self) -> int:
        return sum(array.size for array in self.scores)

    @property
    def fewest_seeds(self) -> int:
        return min(array.size for array in self.scores)


@dataclass(frozen=True)
class Comparison:
    """Model-based side vs model-free side on one scope (a dataset, or all datasets pooled)."""

    scope: str
    model_based: str  # the side's (best) learner
    model_free: str
    model_based_score: float
    model_free_score: float
    gap: Estimate | None  # None below MIN_SEEDS: no interval is shown
    probability: float | None  # P(a run of the model-based learner beats a run of the model-free one)
    runs: tuple[int, int]  # runs the bootstrap drew from on each side
    fewest_seeds: int

    @property
    def gap_value(self) -> float:
        return self.model_based_score - self.model_free_score

    @property
    def verdict(self) -> str:
        if self.gap is None:
            return too_few_seeds_verdict(self.fewest_seeds)
        return verdict_of(self.gap)

    @property
    def too_few_seeds(self) -> bool:
        return self.gap is None


def too_few_seeds_verdict(fewest: int) -> str:
    return f"too few seeds to tell (n = {fewest})"


def verdict_of(gap: Estimate) -> str:
    """'ahead' only when the interval excludes 0 on the side of the point estimate; a tie is no difference."""
    if gap.low > 0 and gap.value > 0:
        return MODEL_BASED_AHEAD
    if gap.high < 0 and gap.value < 0:
        return MODEL_FREE_AHEAD
    return NO_CLEAR_DIFFERENCE


def learner_score(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Per dataset the mean over seeds; pooled over several datasets the IQM of all runs (batched over replicates)."""
    if len(arrays) == 1:
        return np.asarray(np.mean(arrays[0], axis=-1))
    return np.asarray(iqm(np.concatenate(list(arrays), axis=-1), axis=-1))


def compare(scope: str, model_based: Sequence[Learner], model_free: Sequence[Learner]) -> Comparison:
    """The gap between the best of ``model_based`` and the best of ``model_free`` (one learner each for a pair).

    Every learner must hold one score array per dataset of the scope, in the same dataset order.
    """
    learners = [*model_based, *model_free]
    groups = [array for learner in learners for array in learner.scores]
    sizes = [len(learner.scores) for learner in learners]
    bounds = np.cumsum([0, *sizes])

    def best_gap(arrays: list[np.ndarray]) -> np.ndarray:
        scores = [learner_score(arrays[bounds[i] : bounds[i + 1]]) for i in range(len(learners))]
        return np.max(scores[: len(model_based)], axis=0) - np.max(scores[len(model_based) :], axis=0)

    best_based = max(model_based, key=lambda learner: float(learner_score(learner.scores)))
    best_free = max(model_free, key=lambda learner: float(learner_score(learner.scores)))
    fewest = min(learner.fewest_seeds for learner in learners)
    enough = fewest >= MIN_SEEDS
    return Comparison(
        scope=scope,
        model_based=best_based.algo,
        model_free=best_free.algo,
        model_based_score=float(learner_score(best_based.scores)),
        model_free_score=float(learner_score(best_free.scores)),
        gap=bootstrap_ci(groups, best_gap, seed=BOOTSTRAP_SEED) if enough else None,
        probability=average_probability(best_based, best_free) if enough else None,
        runs=(sum(learner.runs for learner in model_based), sum(learner.runs for learner in model_free)),
        fewest_seeds=fewest,
    )


def average_probability(x: Learner, y: Learner) -> float:
    """P(X > Y) per dataset, averaged over datasets (rliable's average probability of improvement)."""
    return float(np.mean([probability_of_improvement(a, b) for a, b in zip(x.scores, y.scores)]))
