"""Plots (matplotlib, Agg): per dataset the learning curves and final scores, across datasets the
aggregate intervals and performance profiles, and per dataset the model-based runs' penalty vs model reward.

Bands show the seeds' spread as it is: learning curves shade the min-max over
seeds (no distribution is assumed from three points), and the legend says so.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.patches import Patch

from workflows.report.records import RunRecord
from workflows.report.stats import performance_profile, resample
from workflows.report.summary import LearnerAggregate, ReportData
from workflows.report.tables import score_unit
from workflows.report.verdict import MIN_SEEDS

PROFILE_POINTS = 201
PROFILE_REPLICATES = 2000


def pyplot() -> Any:
    """pyplot on the Agg backend, chosen only when a report is drawn (importing the report leaves it alone)."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def colors_of(algos: Sequence[str]) -> dict[str, Any]:
    return {algo: pyplot().get_cmap("tab10")(index % 10) for index, algo in enumerate(dict.fromkeys(algos))}


def save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    pyplot().close(figure)
    return path


def file_name(stem: str) -> str:
    return stem.replace("/", "_") + ".png"


# ---------------------------------------------------------------- one dataset


def learning_curve(runs: Sequence[RunRecord]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps, and the mean, min and max over seeds at each (seeds missing a step are left out of that point)."""
    by_step: dict[int, list[float]] = defaultdict(list)
    for run in runs:
        for step, score in run.history:
            by_step[step].append(score)
    steps = np.array(sorted(by_step))
    values = [np.asarray(by_step[step]) for step in steps]
    return (
        steps,
        np.array([v.mean() for v in values]),
        np.array([v.min() for v in values]),
        np.array([v.max() for v in values]),
    )


def plot_dataset(data: ReportData, dataset_id: str, path: Path) -> Path:
    """Learning curves (mean over seeds, min-max band) beside the final scores (IQM with CI, and each seed)."""
    cells = data.cells_of(dataset_id)
    colors = colors_of([cell.algo for cell in cells])
    figure, (curves, finals) = pyplot().subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    for cell in cells:
        steps, mean, low, high = learning_curve(cell.runs)
        label = f"{cell.algo} ({cell.family}), mean of {len(cell.runs)} seed{'s' if len(cell.runs) > 1 else ''}"
        curves.plot(steps, mean, color=colors[cell.algo], linestyle="-" if cell.model_based else "--", label=label)
        if len(cell.runs) > 1:
            curves.fill_between(steps, low, high, color=colors[cell.algo], alpha=0.15, linewidth=0)
    handles, labels = curves.get_legend_handles_labels()
    handles.append(Patch(color="grey", alpha=0.3, linewidth=0))
    labels.append("shaded: min–max over seeds")
    curves.legend(handles, labels, fontsize=8)
    curves.set(
        xlabel="gradient steps (0 = untrained policy)",
        ylabel=score_unit(data, dataset_id),
        title=f"{dataset_id}: learning curves",
    )
    curves.grid(alpha=0.3)
    for row, cell in enumerate(cells):
        estimate, color = cell.final_iqm, colors[cell.algo]
        if np.isnan(estimate.low):
            finals.plot(estimate.value, row, "o", color=color, markerfacecolor="none")
        else:
            error = [[estimate.value - estimate.low], [estimate.high - estimate.value]]
            finals.errorbar(estimate.value, row, xerr=error, fmt="o", color=color, capsize=4)
        finals.scatter(cell.finals, [row + 0.2] * len(cell.runs), color=color, marker="x", s=20, alpha=0.7)
    finals.set_yticks(range(len(cells)), [cell.algo for cell in cells])
    finals.invert_yaxis()
    finals.set(
        xlabel=f"final {score_unit(data, dataset_id)}",
        title=f"final: IQM, 95% CI (x: seeds; hollow: < {MIN_SEEDS} seeds)",
    )
    finals.grid(alpha=0.3, axis="x")
    return save(figure, path)


def plot_penalties(data: ReportData, dataset_id: str, path: Path) -> Path | None:
    """Per model-based learner: its mean reward penalty and mean model reward per logged step (mean over seeds)."""
    traced = [cell for cell in data.cells_of(dataset_id) if any(run.penalty for run in cell.runs)]
    if not traced:
        return None
    colors = colors_of([cell.algo for cell in traced])
    figure, axes = pyplot().subplots(figsize=(8, 3.8))
    for cell in traced:
        rewards: dict[int, list[float]] = defaultdict(list)
        penalties: dict[int, list[float]] = defaultdict(list)
        for run in cell.runs:
            if run.penalty is not None:
                for step, reward, penalty in zip(run.penalty.steps, run.penalty.model_reward, run.penalty.penalty):
                    rewards[step].append(reward)
                    penalties[step].append(penalty)
        steps = sorted(rewards)
        color = colors[cell.algo]
        axes.plot(steps, [np.mean(rewards[s]) for s in steps], color=color, label=f"{cell.algo}: model reward")
        mean_penalty = [np.mean(penalties[s]) for s in steps]
        axes.plot(steps, mean_penalty, color=color, linestyle=":", label=f"{cell.algo}: penalty")
    axes.set(
        xlabel="gradient steps",
        ylabel="as logged (mean over seeds)",
        title=f"{dataset_id}: reward penalty vs model reward",
    )
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return save(figure, path)


# ---------------------------------------------------------------- across datasets


def plot_aggregate(data: ReportData, path: Path) -> Path:
    """IQM and optimality gap per learner over all runs, each with its 95% CI."""
    learners = data.aggregate
    colors = colors_of([learner.algo for learner in learners])
    figure, panels = pyplot().subplots(1, 2, figsize=(11, 0.5 * len(learners) + 1.8), sharey=True)
    for panel, (name, attribute) in zip(panels, (("IQM", "iqm"), ("optimality gap", "optimality_gap"))):
        for row, learner in enumerate(learners):
            estimate = getattr(learner, attribute)
            color = colors[learner.algo]
            if np.isnan(estimate.low):
                panel.plot(estimate.value, row, "o", color=color, markerfacecolor="none")
            else:
                error = [[estimate.value - estimate.low], [estimate.high - estimate.value]]
                panel.errorbar(estimate.value, row, xerr=error, fmt="o", color=color, capsize=4, linewidth=2)
        better = "higher" if attribute == "iqm" else "lower"
        panel.set(xlabel=f"normalized score ({better} is better)", title=f"{name} with 95% CI")
        panel.grid(alpha=0.3, axis="x")
    panels[0].set_yticks(range(len(learners)), [f"{learner.algo} ({learner.family})" for learner in learners])
    panels[0].invert_yaxis()
    figure.suptitle(f"All runs on {len(data.aggregate_datasets)} datasets (hollow: < {MIN_SEEDS} seeds, no CI)")
    return save(figure, path)


def profile_band(learner: LearnerAggregate, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """95% CI of the profile, runs resampled within each dataset."""
    replicates = np.concatenate(resample(learner.scores, PROFILE_REPLICATES, seed=0, expand=False), axis=1)
    profiles = performance_profile(replicates, thresholds)
    low, high = np.percentile(profiles, [2.5, 97.5], axis=0)
    return low, high


def plot_profiles(data: ReportData, path: Path) -> Path:
    """Performance profiles: the fraction of a learner's runs scoring above each normalized score."""
    learners = data.aggregate
    colors = colors_of([learner.algo for learner in learners])
    every = np.concatenate([score for learner in learners for score in learner.scores])
    thresholds = np.linspace(min(0.0, every.min()), max(100.0, every.max()), PROFILE_POINTS)
    figure, axes = pyplot().subplots(figsize=(8, 4.5))
    banded = False
    for learner in learners:
        color, style = colors[learner.algo], "-" if learner.model_based else "--"
        profile = performance_profile(np.concatenate(learner.scores), thresholds)
        axes.plot(thresholds, profile, color=color, linestyle=style, label=f"{learner.algo} ({learner.family})")
        if learner.fewest_seeds >= MIN_SEEDS:
            axes.fill_between(thresholds, *profile_band(learner, thresholds), color=color, alpha=0.15, linewidth=0)
            banded = True
    handles, labels = axes.get_legend_handles_labels()
    if banded:
        handles.append(Patch(color="grey", alpha=0.3, linewidth=0))
        labels.append("shaded: 95% CI (bootstrap within datasets)")
    axes.legend(handles, labels, fontsize=8)
    axes.set(
        xlabel="normalized score τ",
        ylabel="fraction of runs with score > τ",
        title=f"Performance profiles over {len(data.aggregate_datasets)} datasets",
        ylim=(-0.02, 1.02),
    )
    axes.grid(alpha=0.3)
    return save(figure, path)
