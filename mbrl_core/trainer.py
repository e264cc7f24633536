"""The one trainer: every learner, model-free or model-based, runs through this loop.

The loop is deliberately plain (no per-step hook machinery): prepare the
sampler (model-based samplers refresh rollouts here), draw a batch, update,
and every so often log, evaluate and checkpoint. Metrics stay tensors until a
log step, so the hot path never waits on a device sync.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from mbrl_core.atomic import load_torch, save_torch
from mbrl_core.batch import Batch
from mbrl_core.config import bounded
from mbrl_core.errors import ConfigError, TrainingError
from mbrl_core.evaluation import EvalResult
from mbrl_core.learner import Learner
from mbrl_core.progress import progress_bar
from mbrl_core.sampler import Sampler

CHECKPOINT_NAME = "last.pt"
PRECISIONS = ("32", "bf16")  # float32, or bfloat16 autocast around each update (weights and optimizers float32)


@dataclass
class TrainerConfig:
    steps: int = bounded(1_000_000, minimum=1)
    batch_size: int = bounded(256, minimum=1)
    eval_every: int = bounded(5000, minimum=1)
    eval_episodes: int = bounded(10, minimum=1)
    log_every: int = bounded(1000, minimum=1)
    checkpoint_every: int = bounded(50_000, minimum=1)
    # Also checkpoint at the first log step this long after the last checkpoint: on a CPU, 50,000 CQL updates
    # take hours, and a killed run should not lose them. None: by steps only.
    checkpoint_minutes: float | None = bounded(10.0, minimum=0.1)
    seed: int = 0
    device: str = "auto"
    precision: str = "32"

    def __post_init__(self) -> None:
        self.precision = str(self.precision)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"trainer.precision must be one of {', '.join(PRECISIONS)}, got '{self.precision}'")


@dataclass
class TrainingState:
    """What survives a restart besides the learner and the sampler."""

    step: int = 0
    train_seconds: float = 0.0  # wall-clock inside fit(), evaluations included
    eval_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


class MetricAverager:
    """Sums metric tensors between log steps without synchronizing the device.

    Each metric is averaged over the steps that reported it (a learner's actor
    metrics may come every other step; a sampler's rollout metrics once per refresh).
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, metrics: dict[str, Any]) -> None:
        for name, value in metrics.items():
            value = value.detach() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
            self.sums[name] = self.sums[name] + value if name in self.sums else value.clone()
            self.counts[name] = self.counts.get(name, 0) + 1

    def pop(self) -> dict[str, float]:
        means = {name: float(total) / self.counts[name] for name, total in self.sums.items()}
        self.sums, self.counts = {}, {}
        return means


class OfflineTrainer:
    """Runs ``learner`` for ``config.steps`` gradient updates on batches from ``sampler``.

    ``evaluate(act, step)`` is called before the first update, every ``eval_every`` updates and at the end;
    ``loggers`` are Lightning loggers (``log_metrics(dict, step)``). With a
    ``run_dir``, checkpoints go to ``run_dir/checkpoints/last.pt`` atomically.
    """

    def __init__(
        self,
        learner: Learner,
        sampler: Sampler,
        config: TrainerConfig,
        evaluate: Callable[[Callable, int], EvalResult] | None = None,
        run_dir: Path | None = None,
        loggers: list | None = None,
        progress: bool = True,
    ) -> None:
        self.learner = learner
        self.sampler = sampler
        self.config = config
        self.evaluate = evaluate
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.loggers = loggers or []
        self.progress = progress
        self.state = TrainingState()

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_path(self) -> Path | None:
        return self.run_dir / "checkpoints" / CHECKPOINT_NAME if self.run_dir else None

    def save_checkpoint(self) -> None:
        if self.checkpoint_path is None:
            return
        self._check_weights_finite()  # a checkpoint of broken weights would only be resumed into the same failure
        save_torch(
            {
                "learner": self.learner.state_dict(),
                "sampler": self.sampler.state_dict(),
                "state": vars(self.state),
                "rng": capture_rng(),
            },
            self.checkpoint_path,
        )

    def load_checkpoint(self, path: Path | None = None) -> bool:
        """Restore from ``path`` (default: the run's last checkpoint); False when there is none."""
        path = Path(path) if path else self.checkpoint_path
        if path is None or not path.exists():
            return False
        checkpoint = load_torch(path)
        self.learner.load_state_dict(checkpoint["learner"])
        self.sampler.load_state_dict(checkpoint["sampler"])
        self.state = TrainingState(**checkpoint["state"])
        restore_rng(checkpoint["rng"])
        return True

    # ------------------------------------------------------------------ the loop
    def fit(self, until: int | None = None) -> TrainingState:
        """Train up to update ``until`` (default: all steps). Stopping early and calling
        :meth:`load_checkpoint` + :meth:`fit` later gives the same weights as one straight run."""
        end = min(until if until is not None else self.config.steps, self.config.steps)
        averager = MetricAverager()
        bar = progress_bar(
            total=self.config.steps,
            initial=self.state.step,
            disable=not self.progress,
            desc="train",
            unit="upd",
            dynamic_ncols=True,
        )
        self._clock_base, self._clock_start = self.state.train_seconds, time.perf_counter()
        self._log_clock = (self._clock_start, self.state.step)
        self._last_checkpoint = self._clock_start
        try:
            # Learning curves start from the untrained policy. A resumed run has its step-0 point in the restored
            # history (or is past step 0), so it is never evaluated twice.
            if self.evaluate is not None and self.state.step == 0 and not self.state.history:
                self._evaluate(bar, 0)
            while self.state.step < end:
                averager.add(self.sampler.prepare(self.state.step, self.learner))
                averager.add(self._update(self.sampler.sample()))
                self.state.step += 1
                bar.update(1)
                self._periodic(averager, bar)
        finally:
            bar.close()
            self.state.train_seconds = self._elapsed()
        self.save_checkpoint()
        for logger in self.loggers:
            logger.save()
        return self.state

    def _update(self, batch: Batch) -> dict[str, Any]:
        """One learner update; with precision bf16 its forward passes run under bfloat16 autocast
        (the learners keep their output layers, losses, gradients and optimizer steps in float32)."""
        if self.config.precision == "32":
            return self.learner.update(batch)
        with torch.autocast(batch.observations.device.type, dtype=torch.bfloat16):
            return self.learner.update(batch)

    def _elapsed(self) -> float:
        return self._clock_base + time.perf_counter() - self._clock_start

    def _periodic(self, averager: MetricAverager, bar) -> None:
        step, config, last = self.state.step, self.config, self.state.step == self.config.steps
        if step % config.log_every == 0 or last:
            self._log_training(averager, bar, step)
        if self.evaluate is not None and (step % config.eval_every == 0 or last):
            self._evaluate(bar, step)
        if not last and (step % config.checkpoint_every == 0 or self._checkpoint_due(step)):
            self.state.train_seconds = self._elapsed()
            self.save_checkpoint()
            self._last_checkpoint = time.perf_counter()

    def _checkpoint_due(self, step: int) -> bool:
        """A log step at least ``checkpoint_minutes`` after the last checkpoint (or the start of this fit)."""
        minutes = self.config.checkpoint_minutes
        if minutes is None or step % self.config.log_every != 0:
            return False
        return time.perf_counter() - self._last_checkpoint >= 60.0 * minutes

    def _log_training(self, averager: MetricAverager, bar, step: int) -> None:
        now = time.perf_counter()
        since, since_step = self._log_clock
        metrics = {f"train/{name}": value for name, value in averager.pop().items()}
        self._check_finite(metrics, step)
        metrics["train/updates_per_second"] = (step - since_step) / max(now - since, 1e-9)
        self._log(metrics, step)
        bar.set_postfix(
            {name.split("/")[-1]: f"{value:.3g}" for name, value in list(metrics.items())[:4]}, refresh=False
        )
        self._log_clock = (now, step)

    def _evaluate(self, bar, step: int) -> None:
        assert self.evaluate is not None  # _periodic evaluates only with an evaluator
        started = time.perf_counter()
        result = self.evaluate(self.learner.act, step)
        self.state.eval_seconds += time.perf_counter() - started
        self.state.history.append(result.summary())
        self._log(
            {f"eval/{name}": value for name, value in result.summary().items() if name != "step" and value is not None},
            step,
        )
        line = f"step {step}: return {result.return_mean:.1f} ± {result.return_std:.1f}"
        if result.normalized_score is not None:
            line += f", normalized score {result.normalized_score:.1f}"
        bar.write(line)
        self._log_clock = (time.perf_counter(), step)  # updates/s excludes evaluation time

    # ------------------------------------------------------------------ divergence
    def _check_finite(self, metrics: dict[str, float], step: int) -> None:
        """Stop at a log step whose averaged metrics or current weights are NaN/inf (checked only here:
        the metrics are synchronized for logging anyway, so the hot loop never waits on the device)."""
        broken = [f"{name} = {value}" for name, value in metrics.items() if not math.isfinite(value)]
        if broken:
            raise TrainingError(
                f"training diverged in the updates up to step {step}: {', '.join(broken)}; the run is stopped "
                f"(no score is reported){self._kept_checkpoint()}"
            )
        self._check_weights_finite(step)

    def _check_weights_finite(self, step: int | None = None) -> None:
        tensors = [t for t in _floating_tensors(self.learner.state_dict()) if t.numel()]
        if tensors and not bool(torch.stack([t.isfinite().all() for t in tensors]).all()):
            at = self.state.step if step is None else step
            raise TrainingError(
                f"training diverged by step {at}: the learner's weights hold NaN/inf; the run is stopped "
                f"(no score is reported){self._kept_checkpoint()}"
            )

    def _kept_checkpoint(self) -> str:
        path = self.checkpoint_path
        return f"; the last good checkpoint stays in {path}" if path is not None and path.exists() else ""

    def _log(self, metrics: dict[str, float], step: int) -> None:
        for logger in self.loggers:
            logger.log_metrics(metrics, step=step)


def _floating_tensors(state: Any) -> list[torch.Tensor]:
    """Every floating-point tensor in a nested state dict (networks and optimizer moments)."""
    if isinstance(state, torch.Tensor):
        return [state.detach()] if state.is_floating_point() else []
    if isinstance(state, dict):
        return [t for value in state.values() for t in _floating_tensors(value)]
    if isinstance(state, (list, tuple)):
        return [t for value in state for t in _floating_tensors(value)]
    return []


def capture_rng() -> dict[str, Any]:
    """Every global RNG state as tensors and plain data (the checkpoint loads with ``weights_only=True``)."""
    kind, keys, position, has_gauss, cached_gaussian = cast(
        tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True)
    )
    numpy_state = {
        "kind": str(kind),
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "position": int(position),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached_gaussian),
    }
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
