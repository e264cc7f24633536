"""Summary statistics: the report's numbers, computed once from the run records.

Per dataset and learner: final and best-during-training scores over seeds,
the IQM of the final scores with its CI, wall-clock and updates/s. Per
dataset: the model-based vs model-free verdicts (``verdict``). Across several
datasets with reference scores: each learner's IQM and optimality gap over all
its runs, with CIs from a bootstrap stratified by dataset, and its runs for the
performance profiles.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mbrl_core.errors import ArtifactError
from workflows.report.more_seeds import add_seeds_command
from workflows.report.records import RunRecord, dynamics_costs, read_run_folders, run_record
from workflows.report.stats import Estimate, Statistic, iqm, optimality_gap, stratified_bootstrap_ci
from workflows.report.verdict import BOOTSTRAP_SEED, MIN_SEEDS, Comparison, Learner, compare


@dataclass(frozen=True)
class CellSummary:
    """One learner on one dataset, over its seeds."""

    dataset_id: str
    algo: str
    model_based: bool
    runs: tuple[RunRecord, ...]
    final_mean: float
    final_std: float
    final_iqm: Estimate  # NaN bounds below MIN_SEEDS seeds: no interval is shown
    best_mean: float
    best_std: float
    wall_seconds: float
    updates_per_second: float

    @property
    def family(self) -> str:
        return family_name(self.model_based)

    @property
    def finals(self) -> np.ndarray:
        return np.array([run.final_score for run in self.runs])


@dataclass(frozen=True)
class LearnerAggregate:
    """One learner over every dataset of the grid (normalized scores), bootstrap stratified by dataset."""

    algo: str
    model_based: bool
    runs: int
    fewest_seeds: int
    iqm: Estimate
    optimality_gap: Estimate
    scores: tuple[np.ndarray, ...]  # final scores per dataset, in ReportData.datasets order

    @property
    def family(self) -> str:
        return family_name(self.model_based)


@dataclass(frozen=True)
class DynamicsSummary:
    key: str
    dataset_ids: tuple[str, ...]
    runs: int
    train_seconds: float
    metrics: dict[str, Any] | None  # None when the artifact could not be loaded


@dataclass
class ReportData:
    title: str
    datasets: list[str]
    normalized: dict[str, bool]
    cells: list[CellSummary]
    verdicts: list[Comparison] = field(default_factory=list)  # best of each family: per dataset, then pooled
    pairs: list[Comparison] = field(default_factory=list)  # each model-based learner vs each model-free one
    aggregate: list[LearnerAggregate] = field(default_factory=list)
    dynamics: list[DynamicsSummary] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    add_seeds: str | None = None  # the command that adds seeds, when a verdict has too few

    def cells_of(self, dataset_id: str) -> list[CellSummary]:
        return [cell for cell in self.cells if cell.dataset_id == dataset_id]

    @property
    def aggregate_datasets(self) -> list[str]:
        return [dataset for dataset in self.datasets if self.normalized[dataset]]


def family_name(model_based: bool) -> str:
    return "model-based" if model_based else "model-free"


def sample_std(values: Sequence[float]) -> float:
    """Standard deviation over seeds (n - 1 in the denominator); NaN for one seed."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def interval_if_enough(
    values: Sequence[float], strata: Sequence[object] | None = None, statistic: Statistic = iqm
) -> Estimate:
    """``statistic`` with its bootstrap CI; NaN bounds (no interval) when a stratum has fewer than MIN_SEEDS runs."""
    _, runs_per_stratum = np.unique(
        np.asarray(strata if strata is not None else [0] * len(values), dtype=str), return_counts=True
    )
    if runs_per_stratum.min() < MIN_SEEDS:
        return Estimate(float(statistic(values)), math.nan, math.nan)
    return stratified_bootstrap_ci(values, strata=strata, statistic=statistic, seed=BOOTSTRAP_SEED)


def summarize_cell(runs: Sequence[RunRecord]) -> CellSummary:
    finals = [run.final_score for run in runs]
    bests = [run.best_score for run in runs]
    return CellSummary(
        dataset_id=runs[0].dataset_id,
        algo=runs[0].algo,
        model_based=runs[0].model_based,
        runs=tuple(sorted(runs, key=lambda run: run.seed)),
        final_mean=float(np.mean(finals)),
        final_std=sample_std(finals),
        final_iqm=interval_if_enough(finals),
        best_mean=float(np.mean(bests)),
        best_std=sample_std(bests),
        wall_seconds=float(np.mean([run.wall_seconds for run in runs])),
        updates_per_second=float(np.mean([run.updates_per_second for run in runs])),
    )


def aggregate_over_datasets(cells: Sequence[CellSummary], datasets: Sequence[str]) -> list[LearnerAggregate]:
    """Per learner run on every one of ``datasets``: IQM and optimality gap of all its runs' final scores."""
    by_algo: dict[str, dict[str, CellSummary]] = defaultdict(dict)
    for cell in cells:
        by_algo[cell.algo][cell.dataset_id] = cell
    aggregate = []
    for algo, by_dataset in by_algo.items():
        if not set(datasets) <= set(by_dataset):
            continue
        runs = [run for dataset in datasets for run in by_dataset[dataset].runs]
        values, strata = [run.final_score for run in runs], [run.dataset_id for run in runs]
        aggregate.append(
            LearnerAggregate(
                algo=algo,
                model_based=runs[0].model_based,
                runs=len(runs),
                fewest_seeds=min(len(by_dataset[dataset].runs) for dataset in datasets),
                iqm=interval_if_enough(values, strata),
                optimality_gap=interval_if_enough(values, strata, statistic=optimality_gap),
                scores=tuple(by_dataset[dataset].finals for dataset in datasets),
            )
        )
    return aggregate


def family_verdicts(data: ReportData) -> list[Comparison]:
    """Best model-based vs best model-free: on each dataset where both families ran, then over all datasets."""
    verdicts = []
    for dataset_id in data.datasets:
        based, free = split_families(data.cells_of(dataset_id))
        if based and free:
            verdicts.append(compare(dataset_id, as_learners(based), as_learners(free)))
    pooled = data.aggregate_datasets
    based_all = [learner for learner in data.aggregate if learner.model_based]
    free_all = [learner for learner in data.aggregate if not learner.model_based]
    if len(pooled) > 1 and based_all and free_all:
        scope = f"all {len(pooled)} datasets (IQM)"
        verdicts.append(compare(scope, pooled_learners(based_all), pooled_learners(free_all)))
    return verdicts


def pair_comparisons(data: ReportData) -> list[Comparison]:
    """Each model-based learner vs each model-free one: per dataset, then over all datasets."""
    pairs = []
    for dataset_id in data.datasets:
        based, free = split_families(data.cells_of(dataset_id))
        for x in as_learners(based):
            pairs += [compare(dataset_id, [x], [y]) for y in as_learners(free)]
    if len(data.aggregate_datasets) > 1:
        scope = f"all {len(data.aggregate_datasets)} datasets (IQM)"
        based_all = pooled_learners([learner for learner in data.aggregate if learner.model_based])
        free_all = pooled_learners([learner for learner in data.aggregate if not learner.model_based])
        pairs += [compare(scope, [x], [y]) for x in based_all for y in free_all]
    return pairs


def split_families(cells: Sequence[CellSummary]) -> tuple[list[CellSummary], list[CellSummary]]:
    return [cell for cell in cells if cell.model_based], [cell for cell in cells if not cell.model_based]


def as_learners(cells: Sequence[CellSummary]) -> list[Learner]:
    return [Learner(cell.algo, (cell.finals,)) for cell in cells]


def pooled_learners(aggregates: Sequence[LearnerAggregate]) -> list[Learner]:
    return [Learner(learner.algo, learner.scores) for learner in aggregates]


def summarize_dynamics(
    costs: dict[str, tuple[float, dict[str, Any] | None]], records: Sequence[RunRecord]
) -> list[DynamicsSummary]:
    summaries = []
    for key, (seconds, metrics) in costs.items():
        users = [record for record in records if record.dynamics_key == key]
        summaries.append(
            DynamicsSummary(key, tuple(sorted({record.dataset_id for record in users})), len(users), seconds, metrics)
        )
    return summaries


def cell_order(datasets: Sequence[str], algo_order: Sequence[str]) -> Callable[[CellSummary], tuple]:
    """Datasets in order; within one, the compare's learner order, else model-based first, then by name."""
    rank = {algo: index for index, algo in enumerate(algo_order)}

    def key(cell: CellSummary) -> tuple:
        return (datasets.index(cell.dataset_id), rank.get(cell.algo, len(rank)), not cell.model_based, cell.algo)

    return key


def mixed_contents_warnings(records: Sequence[RunRecord]) -> list[str]:
    """One line per dataset id whose runs recorded more than one content fingerprint (the dataset written again)."""
    seen: dict[str, set[str]] = defaultdict(set)
    for record in records:
        if record.dataset_fingerprint is not None:
            seen[record.dataset_id].add(record.dataset_fingerprint)
    return [
        f"WARNING: the runs of {dataset_id} were trained on {len(found)} different contents of it (fingerprints "
        f"{', '.join(sorted(found))}: written again?); its rows are not directly comparable."
        for dataset_id, found in sorted(seen.items())
        if len(found) > 1
    ]


def summarize(
    folder: Path,
    title: str | None = None,
    algo_order: Sequence[str] = (),
    dynamics_store: str | None = None,
    grid: dict[str, Any] | None = None,
) -> ReportData:
    """Read every finished run under ``folder`` and compute the report's numbers.

    ``grid`` is the compare's ``compare.json`` record, when there is one: it
    lets a verdict with too few seeds name the command that adds them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"no such compare folder: {folder}")
    found = read_run_folders(folder)
    if not found.finished:
        raise ArtifactError(
            f"no finished runs under {folder} (a run is finished once its eval.json is written)"
            + "".join(f"; {line}" for line in found.skipped)
        )
    costs = dynamics_costs(found.finished.values(), dynamics_store)
    seconds = {key: cost[0] for key, cost in costs.items()}
    records = [run_record(run_dir, evaluation, seconds) for run_dir, evaluation in found.finished.items()]

    grouped: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for record in records:
        grouped[(record.dataset_id, record.algo)].append(record)
    datasets = sorted({record.dataset_id for record in records})
    normalized = {
        dataset: all(record.normalized for record in records if record.dataset_id == dataset) for dataset in datasets
    }
    data = ReportData(
        title=title or folder.resolve().name,
        datasets=datasets,
        normalized=normalized,
        cells=sorted((summarize_cell(runs) for runs in grouped.values()), key=cell_order(datasets, algo_order)),
        dynamics=summarize_dynamics(costs, records),
        unfinished=[run_dir.name for run_dir in found.unfinished],
        warnings=[*found.skipped, *mixed_contents_warnings(records)],
    )
    pooled = data.aggregate_datasets
    if len(pooled) > 1:
        data.aggregate = aggregate_over_datasets([cell for cell in data.cells if normalized[cell.dataset_id]], pooled)
    data.verdicts = family_verdicts(data)
    data.pairs = pair_comparisons(data)
    if any(comparison.too_few_seeds for comparison in [*data.verdicts, *data.pairs]):
        data.add_seeds = add_seeds_command(folder, grid, MIN_SEEDS)
    return data
