"""Run records: what the report reads from each run folder, and nothing it cannot trust.

A run counts once its ``eval.json`` is written. A truncated or hand-edited
``eval.json`` (a crash mid-copy, a full disk) costs that run, never the
report: it is skipped with one warning line naming the file. The learner's
reward-penalty diagnostics, when a model-based learner logged them, and the
policy entropy of the SAC-based learners come from the run's ``metrics.csv``.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynamics.service import DynamicsService
from mbrl_core.config import read_yaml
from mbrl_core.errors import ConfigError, MbrlError

EVAL_FILE = "eval.json"
METRICS_FILE = "metrics.csv"
CONFIG_FILE = "config.yaml"
# Logged by the penalized model-based learners (MOPO, MOReL, COMBO) per update; the CSV logger may prefix them.
PENALTY_METRIC = "penalty_mean"
MODEL_REWARD_METRIC = "model_reward_mean"
ALPHA_METRIC, ENTROPY_METRIC = "alpha", "entropy"  # SAC-based learners: the entropy bonus alpha * H per step
REQUIRED_FIELDS = ("algo", "dataset_id", "seed", "steps", "model_based", "final", "best", "history", "train_seconds")


@dataclass(frozen=True)
class PenaltyTrace:
    """A model-based run's mean reward penalty beside the mean model reward it is subtracted from, per logged step."""

    steps: tuple[int, ...]
    model_reward: tuple[float, ...]
    penalty: tuple[float, ...]
    entropy_bonus: tuple[float, ...] | None = None  # alpha * H per logged step, for SAC-based learners

    @property
    def mean_model_reward(self) -> float:
        return sum(self.model_reward) / len(self.model_reward)

    @property
    def mean_penalty(self) -> float:
        return sum(self.penalty) / len(self.penalty)

    @property
    def mean_entropy_bonus(self) -> float | None:
        return sum(self.entropy_bonus) / len(self.entropy_bonus) if self.entropy_bonus else None


@dataclass(frozen=True)
class EntropyTrace:
    """A SAC-based run's policy entropy and temperature α per logged step, beside the two entropies that frame it."""

    steps: tuple[int, ...]
    entropy: tuple[float, ...]
    alpha: tuple[float, ...]
    uniform: float | None  # the uniform policy's entropy on the unit action box, act_dim · ln 2 (None: not recorded)
    target: float | None  # what auto-entropy tunes α towards (None: α fixed, or not recorded)

    @property
    def share_left(self) -> float | None:
        """The last entropy's distance to the target as a share of uniform → target (≤ 0: target reached)."""
        if self.uniform is None or self.target is None or self.uniform <= self.target:
            return None
        return (self.entropy[-1] - self.target) / (self.uniform - self.target)


@dataclass(frozen=True)
class RunRecord:
    """What the report needs from one finished run."""

    name: str
    algo: str
    dataset_id: str
    seed: int
    steps: int
    model_based: bool
    normalized: bool  # scores are normalized scores (else raw returns: the dataset has no refs)
    final_score: float
    best_score: float
    history: tuple[tuple[int, float], ...]
    train_seconds: float
    eval_episodes: int
    dynamics_key: str | None
    dynamics_seconds: float  # what pretraining this run's dynamics model cost; 0 for model-free runs
    penalty: PenaltyTrace | None = None
    dataset_fingerprint: str | None = None  # the content hash its config.yaml records (None: not recorded)
    entropy: EntropyTrace | None = None  # SAC-based learners only

    @property
    def wall_seconds(self) -> float:
        return self.train_seconds + self.dynamics_seconds

    @property
    def updates_per_second(self) -> float:
        return self.steps / self.wall_seconds if self.wall_seconds > 0 else math.nan


@dataclass
class RunFolders:
    """A folder's runs sorted by what the report can do with them."""

    finished: dict[Path, dict[str, Any]]  # run folder -> its eval.json
    unfinished: list[Path]
    skipped: list[str]  # one warning line per run whose eval.json could not be read


def run_folders(folder: Path) -> list[Path]:
    """Run folders of a compare (``<folder>/runs/*``) or of a plain runs directory (``<folder>/*``)."""
    parent = folder / "runs" if (folder / "runs").is_dir() else folder
    return sorted(
        path
        for path in parent.iterdir()
        if path.is_dir() and ((path / "config.yaml").exists() or (path / EVAL_FILE).exists())
    )


def read_run_folders(folder: Path) -> RunFolders:
    result = RunFolders({}, [], [])
    for run_dir in run_folders(folder):
        path = run_dir / EVAL_FILE
        if not path.exists():
            result.unfinished.append(run_dir)
            continue
        try:
            evaluation = json.loads(path.read_text())
            check_eval_record(evaluation)
        except (ValueError, KeyError, TypeError) as error:
            result.skipped.append(f"warning: skipped {path}: {describe(error)}")
            continue
        if evaluation.get("finished", False):
            result.finished[run_dir] = evaluation
        else:
            result.unfinished.append(run_dir)
    return result


def describe(error: Exception) -> str:
    if isinstance(error, json.JSONDecodeError):
        return "not valid JSON"
    if isinstance(error, KeyError):
        return f"no {error.args[0]} field"
    return str(error)


def check_eval_record(evaluation: Any) -> None:
    """Raise if ``evaluation`` lacks what :func:`run_record` reads, so a damaged file fails here and only here."""
    if not isinstance(evaluation, dict):
        raise TypeError("not a JSON object")
    missing = [key for key in REQUIRED_FIELDS if key not in evaluation]
    if missing:
        raise KeyError(missing[0])
    for point in (evaluation["final"], evaluation["best"], *evaluation["history"]):
        score_of(point)
        int(point["step"])
    int(evaluation["final"]["episodes"])
    float(evaluation["train_seconds"])


def score_of(evaluation: dict[str, Any]) -> float:
    """The normalized score, or the raw mean return when the dataset has no reference scores."""
    score = evaluation.get("normalized_score")
    return float(evaluation["return_mean"] if score is None else score)


def run_record(run_dir: Path, evaluation: dict[str, Any], dynamics_seconds: dict[str, float]) -> RunRecord:
    dynamics_key = (evaluation.get("dynamics") or {}).get("key")
    model_based = bool(evaluation["model_based"])
    config = run_config_or_empty(run_dir / CONFIG_FILE)
    return RunRecord(
        name=run_dir.name,
        algo=evaluation["algo"],
        dataset_id=evaluation["dataset_id"],
        seed=int(evaluation["seed"]),
        steps=int(evaluation["steps"]),
        model_based=model_based,
        normalized=evaluation["final"].get("normalized_score") is not None,
        final_score=score_of(evaluation["final"]),
        best_score=score_of(evaluation["best"]),
        history=tuple((int(point["step"]), score_of(point)) for point in evaluation["history"]),
        train_seconds=float(evaluation["train_seconds"]),
        eval_episodes=int(evaluation["final"]["episodes"]),
        dynamics_key=dynamics_key,
        dynamics_seconds=dynamics_seconds.get(dynamics_key, 0.0) if dynamics_key else 0.0,
        penalty=read_penalty_trace(run_dir / METRICS_FILE) if model_based else None,
        dataset_fingerprint=recorded_fingerprint(config),
        entropy=read_entropy_trace(run_dir / METRICS_FILE, *entropy_frame(config)),
    )


def run_config_or_empty(path: Path) -> dict[str, Any]:
    """A run's ``config.yaml``; empty when it is missing or cannot be read (the report then shows less; unlike
    workflows.runs.read_run_config, which refuses, and which the report does not import: it pulls in training)."""
    try:
        return read_yaml(path)
    except (ConfigError, OSError, ValueError):
        return {}


def recorded_fingerprint(config: dict[str, Any]) -> str | None:
    """The dataset fingerprint a run's config records; None when it records none."""
    dataset = config.get("dataset")
    fingerprint = dataset.get("fingerprint") if isinstance(dataset, dict) else None
    return fingerprint if isinstance(fingerprint, str) else None


def entropy_frame(config: dict[str, Any]) -> tuple[float | None, float | None]:
    """(uniform policy's entropy, auto-entropy target) from a run's config: act_dim · ln 2 and by default -act_dim."""
    dataset, learner = config.get("dataset"), config.get("learner")
    low = dataset.get("action_low") if isinstance(dataset, dict) else None
    act_dim = len(low) if isinstance(low, list) and low else None
    uniform = act_dim * math.log(2.0) if act_dim else None
    if not isinstance(learner, dict) or learner.get("auto_entropy") is not True:
        return uniform, None
    target = learner.get("target_entropy")
    if isinstance(target, (int, float)) and not isinstance(target, bool):
        return uniform, float(target)
    return uniform, (-float(act_dim) if act_dim and target is None else None)


def read_entropy_trace(path: Path, uniform: float | None, target: float | None) -> EntropyTrace | None:
    """The entropy and α columns of ``metrics.csv``; None when the run logged no such pair (not SAC-based)."""
    rows = read_metric_rows(path, (ENTROPY_METRIC, ALPHA_METRIC))
    if not rows:
        return None
    steps, entropies, alphas = zip(*rows)
    return EntropyTrace(tuple(map(int, steps)), tuple(entropies), tuple(alphas), uniform, target)


def read_penalty_trace(path: Path) -> PenaltyTrace | None:
    """The penalty and model-reward columns of ``metrics.csv``; None when the run logged no such pair."""
    rows = read_metric_rows(path, (MODEL_REWARD_METRIC, PENALTY_METRIC), optional=(ALPHA_METRIC, ENTROPY_METRIC))
    if not rows:
        return None
    steps, rewards, penalties, alphas, entropies = zip(*rows)
    known = all(value is not None for value in (*alphas, *entropies))
    bonuses = tuple(alpha * entropy for alpha, entropy in zip(alphas, entropies)) if known else None
    return PenaltyTrace(tuple(map(int, steps)), tuple(rewards), tuple(penalties), bonuses)


def read_metric_rows(path: Path, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> list[tuple[Any, ...]]:
    """(step, *required, *optional) of each ``metrics.csv`` row that logged every required metric; optional
    ones are None where absent. A row that does not parse (a line cut short by a kill) is skipped, and an
    unreadable rest of the file ends the rows; no file or no such columns: no rows."""
    if not path.exists():
        return []
    rows: list[tuple[Any, ...]] = []
    with open(path, newline="", errors="replace") as stream:
        reader = csv.DictReader(stream)
        try:
            columns = {metric_name(column): column for column in reader.fieldnames or ()}
            if any(name not in columns for name in required):
                return []
            wanted = [columns[name] for name in required]
            extra = [columns.get(name) for name in optional]
            rows.extend(filter(None, (parse_metric_row(row, wanted, extra) for row in reader)))
        except csv.Error:
            pass
    return rows


def parse_metric_row(row: dict[str, Any], wanted: list[str], extra: list[str | None]) -> tuple[Any, ...] | None:
    """One row's (step, *wanted, *extra) as floats; None when the step or a wanted value is blank or damaged."""
    try:
        values = (float(row["step"]), *(float(row[column]) for column in wanted))
        return (*values, *(float(row[column]) if column and row.get(column) else None for column in extra))
    except (TypeError, ValueError, KeyError):
        return None


def metric_name(column: str) -> str:
    """``train/penalty_mean`` -> ``penalty_mean``: loggers group metrics under a prefix."""
    return column.rsplit("/", 1)[-1]


# ---------------------------------------------------------------- dynamics models behind the runs


def load_dynamics(key: str, store: str | None) -> Any | None:
    """The dynamics artifact behind ``key``, or None if the artifact is unavailable."""
    try:
        return DynamicsService.load(key, store=store, device="cpu")
    except (MbrlError, OSError):
        return None


def dynamics_costs(
    evaluations: Iterable[dict[str, Any]], store: str | None
) -> dict[str, tuple[float, dict[str, Any] | None]]:
    """Per dynamics key: (training seconds, artifact metrics or None).

    The artifact's own ``train_seconds`` is the true cost even when every run
    reused the model; without the artifact, fall back to the longest
    ``pretrain_seconds`` a run recorded (the run that trained it).
    """
    recorded: dict[str, float] = defaultdict(float)
    for evaluation in evaluations:
        dynamics = evaluation.get("dynamics")
        if dynamics:
            recorded[dynamics["key"]] = max(recorded[dynamics["key"]], float(dynamics.get("pretrain_seconds") or 0.0))
    costs = {}
    for key, fallback in recorded.items():
        service = load_dynamics(key, store)
        # Training facts live in .metrics, holdout error and calibration (elite means) in .quality.
        metrics = {**service.metrics, **service.quality.get("elite_mean", {})} if service is not None else None
        seconds = float(metrics["train_seconds"]) if metrics and "train_seconds" in metrics else fallback
        costs[key] = (seconds, metrics)
    return costs
