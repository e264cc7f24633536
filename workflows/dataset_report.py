"""What a dataset holds, before anyone trains on it (``mbrl inspect``).

The report is computed from the raw Minari episodes, not from
:func:`mbrl_core.data.load_dataset`, because the loader refuses NaN/inf while
the report must say where they are. Statistics skip non-finite values; the
non-finite values themselves are counted and located.

State coverage is an *estimate*: observations are standardized, projected on
their first principal components (at most three), and each component is cut
into equal bins between its 1st and 99th percentile; the estimate is the
fraction of the resulting grid cells that hold at least one state. It compares
how evenly datasets of one environment fill the region they visit. The
effective dimension (participation ratio of the correlation matrix's
eigenvalues, ``(Σλ)² / Σλ²``) says how many directions the states really span.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mbrl_core.batch import FLOAT_FIELDS
from mbrl_core.data import DatasetInfo, dataset_info, load_minari, transition_arrays

MIN_TRANSITIONS = 1000
EXPLODING_ABS = 1e4  # |value| beyond this breaks normalizers and network inputs
ACTION_TOLERANCE = 1e-6
COVERAGE_COMPONENTS = 3
COVERAGE_BINS = 10
FINITE_FIELDS = FLOAT_FIELDS


@dataclass
class DatasetReport:
    """``summary`` is what ``--json`` prints; the arrays feed the plot."""

    summary: dict[str, Any]
    episode_returns: np.ndarray
    episode_lengths: np.ndarray

    @property
    def warnings(self) -> list[str]:
        return self.summary["warnings"]

    def to_json(self) -> str:
        return json.dumps(_json_safe(self.summary), indent=2)


def inspect_dataset(
    dataset_id: str, min_transitions: int = MIN_TRANSITIONS, exploding_abs: float = EXPLODING_ABS
) -> DatasetReport:
    """Open a local (or downloadable) Minari dataset and report on it."""
    dataset = load_minari(dataset_id)
    info = dataset_info(dataset)
    arrays = transition_arrays(dataset.iterate_episodes(), info)
    return build_report(arrays, info, min_transitions, exploding_abs)


def build_report(
    arrays: dict[str, np.ndarray],
    info: DatasetInfo,
    min_transitions: int = MIN_TRANSITIONS,
    exploding_abs: float = EXPLODING_ABS,
) -> DatasetReport:
    """The report for transition arrays as returned by :func:`mbrl_core.data.transition_arrays`."""
    starts = np.flatnonzero(arrays["episode_starts"] > 0.5)
    ends = np.r_[starts[1:] - 1, len(arrays["actions"]) - 1]
    returns = np.add.reduceat(arrays["rewards"], starts)
    lengths = ends - starts + 1
    # every state: the start of each transition plus the state each episode ends in
    states = np.concatenate([arrays["observations"], arrays["next_observations"][ends]])
    observation_dims = dimension_stats(states, exploding_abs)
    action_dims = dimension_stats(arrays["actions"], exploding_abs)
    out_of_range = action_bound_violations(arrays["actions"], info)
    non_finite = non_finite_values(arrays)
    summary = {
        "dataset_id": info.dataset_id,
        "env_id": info.env_id,
        "obs_dim": info.obs_dim,
        "act_dim": info.act_dim,
        "ref_min_score": info.ref_min_score,
        "ref_max_score": info.ref_max_score,
        "transitions": int(len(arrays["actions"])),
        "episodes": int(len(starts)),
        "terminals": int(arrays["terminals"].sum()),
        "timeouts": int(arrays["timeouts"].sum()),
        "episodes_ending_unflagged": int(np.sum((arrays["terminals"][ends] < 0.5) & (arrays["timeouts"][ends] < 0.5))),
        "returns": distribution(returns),
        "normalized_returns": distribution(np.array([info.normalized_score(r) for r in returns]))
        if info.has_refs
        else None,
        "episode_lengths": distribution(lengths),
        "rewards": distribution(arrays["rewards"]),
        "observations": observation_dims,
        "actions": action_dims,
        "action_low": np.asarray(info.action_space.low, dtype=float).reshape(-1).tolist(),
        "action_high": np.asarray(info.action_space.high, dtype=float).reshape(-1).tolist(),
        "actions_out_of_range": out_of_range,
        "non_finite": non_finite,
        "coverage": state_coverage(states),
    }
    summary["warnings"] = warnings_for(summary, min_transitions, exploding_abs)
    return DatasetReport(summary, returns, lengths)


# --------------------------------------------------------------------------- statistics


def distribution(values: np.ndarray) -> dict[str, float | int]:
    """min/mean/median/max/std over the finite values, and how many were not finite."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"count": int(values.size), "non_finite": int(values.size)}
    return {
        "count": int(values.size),
        "min": float(finite.min()),
        "mean": float(finite.mean()),
        "median": float(np.median(finite)),
        "max": float(finite.max()),
        "std": float(finite.std()),
        "non_finite": int(values.size - finite.size),
    }


def dimension_stats(values: np.ndarray, exploding_abs: float) -> list[dict[str, Any]]:
    """Per-dimension distribution, with ``constant`` and ``exploding`` flags."""
    rows = []
    for column in np.asarray(values, dtype=np.float64).T:
        stats = distribution(column)
        finite = column[np.isfinite(column)]
        stats["constant"] = bool(finite.size > 1 and finite.max() - finite.min() <= 1e-8 * max(1.0, abs(finite.mean())))
        stats["exploding"] = bool(finite.size and np.abs(finite).max() > exploding_abs)
        rows.append(stats)
    return rows


def action_bound_violations(actions: np.ndarray, info: DatasetInfo) -> dict[str, Any]:
    """Rows with an action outside the action space's [low, high], per dimension, and the largest excess."""
    low = np.asarray(info.action_space.low, dtype=np.float64).reshape(-1)
    high = np.asarray(info.action_space.high, dtype=np.float64).reshape(-1)
    with np.errstate(invalid="ignore"):
        excess = np.maximum(low - actions, actions - high)
        outside = excess > ACTION_TOLERANCE  # NaN compares False: non-finite actions are reported as such, not here
    return {
        "transitions": int(outside.any(axis=1).sum()),
        "per_dimension": outside.sum(axis=0).astype(int).tolist(),
        "max_excess": float(excess[outside].max()) if outside.any() else 0.0,
    }


def non_finite_values(arrays: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """For each field holding NaN/inf: how many values, the first transition, and which dimensions."""
    found = {}
    for name in FINITE_FIELDS:
        bad = ~np.isfinite(arrays[name].reshape(len(arrays[name]), -1))
        if bad.any():
            found[name] = {
                "count": int(bad.sum()),
                "first_transition": int(np.argwhere(bad)[0][0]),
                "dimensions": np.flatnonzero(bad.any(axis=0)).tolist(),
            }
    return found


def state_coverage(
    states: np.ndarray, components: int = COVERAGE_COMPONENTS, bins: int = COVERAGE_BINS
) -> dict[str, Any]:
    """Grid-occupancy estimate on the leading principal components (see the module docstring)."""
    states = states[np.isfinite(states).all(axis=1)]
    spread = states.std(axis=0) if len(states) else np.zeros(states.shape[1])
    varying = spread > 1e-8
    if len(states) < 2 or not varying.any():
        return {
            "cell_fraction": 0.0,
            "occupied_cells": int(len(states) > 0),
            "components": 0,
            "bins": bins,
            "effective_dimension": 0.0,
        }
    standardized = (states[:, varying] - states[:, varying].mean(axis=0)) / spread[varying]
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(standardized, rowvar=False).reshape(varying.sum(), varying.sum()))
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, eigenvectors = np.clip(eigenvalues[order], 0.0, None), eigenvectors[:, order]
    k = min(components, int(varying.sum()))
    projected = standardized @ eigenvectors[:, :k]
    low, high = np.percentile(projected, [1, 99], axis=0)
    width = np.where(high > low, (high - low) / bins, 1.0)
    cells = np.clip(((projected - low) / width).astype(np.int64), 0, bins - 1)
    occupied = len(np.unique(cells, axis=0))
    return {
        "cell_fraction": occupied / bins**k,
        "occupied_cells": int(occupied),
        "components": k,
        "bins": bins,
        "effective_dimension": float(eigenvalues.sum() ** 2 / np.sum(eigenvalues**2)),
    }


def warnings_for(summary: dict[str, Any], min_transitions: int, exploding_abs: float) -> list[str]:
    found = []
    if summary["transitions"] < min_transitions:
        found.append(
            f"only {summary['transitions']} transitions (fewer than {min_transitions}): too few to "
            "fit a dynamics model or a policy"
        )
    for name, where in summary["non_finite"].items():
        found.append(
            f"{where['count']} NaN/inf values in {name} (first at transition "
            f"{where['first_transition']}, dimensions {where['dimensions']})"
        )
    violations = summary["actions_out_of_range"]
    if violations["transitions"]:
        dims = [i for i, n in enumerate(violations["per_dimension"]) if n]
        found.append(
            f"{violations['transitions']} actions outside the action space (dimensions {dims}, "
            f"largest excess {violations['max_excess']:.4g})"
        )
    for kind in ("observations", "actions"):
        constant = [i for i, row in enumerate(summary[kind]) if row["constant"]]
        exploding = [i for i, row in enumerate(summary[kind]) if row["exploding"]]
        if constant:
            found.append(f"constant {kind} dimensions {constant} (they carry no information)")
        if exploding:
            found.append(f"exploding {kind} dimensions {exploding} (|value| above {exploding_abs:g})")
    if summary["ref_min_score"] is None or summary["ref_max_score"] is None:
        found.append("no reference scores (ref_min_score/ref_max_score): normalized scores cannot be computed")
    return found


# --------------------------------------------------------------------------- output


def format_report(report: DatasetReport) -> str:
    """The human-readable table ``mbrl inspect`` prints."""
    s = report.summary
    lines = [
        f"dataset        {s['dataset_id']}  (env {s['env_id']}, obs dim {s['obs_dim']}, action dim {s['act_dim']})",
        f"transitions    {s['transitions']}",
        f"episodes       {s['episodes']}  (terminal {s['terminals']}, timeout {s['timeouts']}, "
        f"unflagged end {s['episodes_ending_unflagged']})",
        f"ref scores     min {_number(s['ref_min_score'])}  max {_number(s['ref_max_score'])}",
        _distribution_line("returns", s["returns"]),
    ]
    if s["normalized_returns"] is not None:
        lines.append(_distribution_line("normalized", s["normalized_returns"]))
    lines += [_distribution_line("ep. lengths", s["episode_lengths"]), _distribution_line("rewards", s["rewards"])]
    coverage = s["coverage"]
    lines.append(
        f"coverage       {coverage['cell_fraction']:.3f} of a "
        f"{coverage['bins']}^{coverage['components']} grid on the leading principal "
        f"components ({coverage['occupied_cells']} cells); effective dimension {coverage['effective_dimension']:.2f}"
    )
    for kind in ("observations", "actions"):
        lines += ["", _dimension_table(kind, s[kind])]
    lines.append("")
    lines += [f"warning: {text}" for text in s["warnings"]] or ["no warnings"]
    return "\n".join(lines)


def _distribution_line(label: str, stats: dict[str, Any]) -> str:
    values = "  ".join(f"{key} {_number(stats.get(key))}" for key in ("min", "mean", "median", "max"))
    extra = f"  ({stats['non_finite']} non-finite)" if stats["non_finite"] else ""
    return f"{label:<15}{values}{extra}"


def _dimension_table(kind: str, rows: list[dict[str, Any]]) -> str:
    header = f"{kind:<13}{'min':>12}{'max':>12}{'mean':>12}{'std':>12}  flags"
    lines = [header]
    for index, row in enumerate(rows):
        flags = [name for name in ("constant", "exploding") if row[name]]
        if row["non_finite"]:
            flags.append(f"{row['non_finite']} non-finite")
        numbers = "".join(f"{_number(row.get(key)):>12}" for key in ("min", "max", "mean", "std"))
        lines.append(f"  [{index}]{'':<8}{numbers}  {', '.join(flags)}")
    return "\n".join(lines)


def _number(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def _json_safe(value):
    """JSON has no NaN/inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def plot_report(report: DatasetReport, path: str | Path) -> Path:
    """A PNG with the returns histogram, episode lengths and per-dimension ranges."""
    from matplotlib.figure import (
        Figure,  # no pyplot: no GUI backend, safe on headless machines
    )

    s = report.summary
    figure = Figure(figsize=(12, 8), layout="constrained")
    returns_axes, lengths_axes, obs_axes, act_axes = figure.subplots(2, 2).ravel()
    finite_returns = report.episode_returns[np.isfinite(report.episode_returns)]
    returns_axes.hist(finite_returns, bins=min(50, max(5, len(finite_returns) // 5)), color="tab:blue")
    returns_axes.set(title="episode returns", xlabel="return", ylabel="episodes")
    for ref, name in ((s["ref_min_score"], "ref min"), (s["ref_max_score"], "ref max")):
        if ref is not None:
            returns_axes.axvline(ref, color="gray", linestyle="--")
            returns_axes.annotate(name, (ref, 1), xycoords=("data", "axes fraction"), rotation=90, va="top", ha="right")
    lengths_axes.hist(
        report.episode_lengths, bins=min(50, max(5, len(report.episode_lengths) // 5)), color="tab:orange"
    )
    lengths_axes.set(title="episode lengths", xlabel="steps", ylabel="episodes")
    _plot_ranges(obs_axes, s["observations"], "observation ranges (min-max, mean ± std)")
    _plot_ranges(act_axes, s["actions"], "action ranges (min-max, mean ± std); bounds in red")
    dims = np.arange(len(s["action_low"]))
    act_axes.scatter(dims, s["action_low"], marker="_", s=400, color="red")
    act_axes.scatter(dims, s["action_high"], marker="_", s=400, color="red")
    figure.suptitle(f"{s['dataset_id']}: {s['transitions']} transitions, {s['episodes']} episodes")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def _plot_ranges(axes, rows: list[dict[str, Any]], title: str) -> None:
    dims = np.arange(len(rows))
    get = lambda key: np.array([row.get(key, np.nan) for row in rows], dtype=float)  # noqa: E731
    axes.vlines(dims, get("min"), get("max"), color="tab:gray", linewidth=1)
    axes.errorbar(dims, get("mean"), yerr=get("std"), fmt="o", color="tab:green", markersize=3, capsize=3)
    axes.set(title=title, xlabel="dimension", xticks=dims)
