"""Training the ensemble with Lightning: a thin LightningModule (loss, optimizer, logging), the
per-member snapshot / early-stopping callback and the fit function. The data (holdout split,
bootstrap batches) is the LightningDataModule of :mod:`dynamics.datamodule`.

The recipe is MOPO's (tianheyu927/mopo, ``mopo/models/bnn.py``): fit the input normalizer on the
training split only; loss = sum over members of the Gaussian NLL + 0.01 (sum max_lv - sum min_lv)
+ L2 decay; after each epoch a member's weights are snapshotted when its holdout MSE improves by
more than 1% (``_save_best``), training stops once MORE than ``patience`` (5) epochs in a row
snapshotted no member (``_epochs_since_update > _max_epochs_since_update``), the snapshots are
restored, and the elites are the members with the lowest holdout MSE.

A fit can be resumed: with a ``resume_path``, a Lightning checkpoint is written there (atomically) at the end
of every epoch, holding the weights, Adam's state, the loop's epoch, the snapshot tracker with the members'
best weights and the batch order's generator. A fit started again with the same path continues from it and
ends with the same weights as a fit that was never interrupted.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.core.optimizer import LightningOptimizer

from dynamics.artifacts import epochs_done
from dynamics.config import DynamicsConfig
from dynamics.datamodule import EnsembleDataModule, TrainBlock, TrainingSplit
from dynamics.ensemble import GaussianEnsemble, gaussian_nll, member_mse

# Lightning's name for each DynamicsConfig.precision: bf16 = autocast, float32 master weights and optimizer
LIGHTNING_PRECISION = {"32": "32-true", "bf16": "bf16-mixed"}

# --------------------------------------------------------------------------- module


class EnsembleLightningModule(L.LightningModule):
    """Thin Lightning wrapper around the plain nn.Module: the loss, the optimizer, the holdout metrics.

    Optimization is manual: a training 'batch' is a :class:`TrainBlock` of several batches and every
    batch of it is one Adam step (MOPO's update), so Lightning's loop runs once per block."""

    def __init__(self, ensemble: GaussianEnsemble, config: DynamicsConfig) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.ensemble = ensemble
        self.config = config
        self.holdout_mse = torch.full((ensemble.ensemble_size,), math.inf)

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor, terminals: torch.Tensor) -> torch.Tensor:
        """One batch [E, B, ...]: the members' summed Gaussian NLL, the log-variance bound penalty, the
        L2 decay and, with the learned termination head, its cross-entropy."""
        out = self.ensemble(inputs)
        loss = gaussian_nll(out.mean, out.logvar, targets).sum()
        loss = loss + self.ensemble.logvar_bound_loss(self.config.logvar_bound_coef) + self.ensemble.weight_decay_loss()
        if out.terminal_logit is not None:
            cross_entropy = F.binary_cross_entropy_with_logits(out.terminal_logit, terminals, reduction="none")
            loss = loss + cross_entropy.mean(dim=1).sum()
        return loss

    def training_step(self, block: TrainBlock, block_idx: int) -> None:
        optimizer = self.optimizers()
        assert isinstance(optimizer, LightningOptimizer)  # configure_optimizers returns one
        losses = []
        for step in range(block.steps):
            loss = self.loss(block.inputs[step], block.targets[step], block.terminals[step])
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            optimizer.step()
            losses.append(loss.detach())
        self.log("train/loss", torch.stack(losses).mean(), prog_bar=True, batch_size=block.steps)

    def validation_step(self, holdout: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        inputs, targets = holdout
        out = self.ensemble(inputs)
        self.holdout_mse = member_mse(out.mean, targets).cpu()
        # every rank holds the whole holdout and the same weights: the synced mean is the same value
        size = len(inputs)
        self.log("holdout/mse_best_member", self.holdout_mse.min(), prog_bar=True, batch_size=size, sync_dist=True)
        self.log("holdout/mse_mean", self.holdout_mse.mean(), batch_size=size, sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # plain Adam: the per-layer L2 decay is part of the loss, as in MOPO
        return make_adam(list(self.ensemble.parameters()), self.config.learning_rate)


def make_adam(parameters: list[torch.Tensor], learning_rate: float) -> torch.optim.Adam:
    """Adam with its fused kernel where this torch has one for the device (one kernel per step instead of
    about ten per parameter: 0.3 ms against 2.2 ms a step for the default ensemble on 2 CPU threads),
    else the foreach one."""
    try:
        return torch.optim.Adam(parameters, lr=learning_rate, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(parameters, lr=learning_rate, foreach=True)


# --------------------------------------------------------------------------- snapshots, elites


class SnapshotTracker:
    """Per-member best holdout MSE; a member improves when (best - mse) / best > threshold.
    ``should_stop`` once more than ``patience`` epochs in a row improved no member (MOPO's strict
    ``>``: with patience 5 the sixth such epoch stops)."""

    def __init__(self, ensemble_size: int, threshold: float, patience: int) -> None:
        self.best = [math.inf] * ensemble_size
        self.best_epoch = [-1] * ensemble_size
        self.threshold, self.patience = threshold, patience
        self.epochs_without_improvement = 0

    def update(self, epoch: int, holdout_mse: list[float]) -> list[int]:
        improved = [
            m
            for m, (best, mse) in enumerate(zip(self.best, holdout_mse))
            if best == math.inf or (best - mse) / best > self.threshold
        ]
        for member in improved:
            self.best[member], self.best_epoch[member] = holdout_mse[member], epoch
        self.epochs_without_improvement = 0 if improved else self.epochs_without_improvement + 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.epochs_without_improvement > self.patience

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": list(self.best),
            "best_epoch": list(self.best_epoch),
            "epochs_without_improvement": self.epochs_without_improvement,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = list(state["best"]), list(state["best_epoch"])
        self.epochs_without_improvement = int(state["epochs_without_improvement"])


class MemberSnapshots(L.Callback):
    """Keeps each member's best weights and stops training when no member improves any more."""

    def __init__(self, tracker: SnapshotTracker) -> None:
        self.tracker = tracker
        self.states: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.tracker.should_stop:  # resumed from the checkpoint of the epoch that stopped the fit
            trainer.should_stop = True

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        assert isinstance(module, EnsembleLightningModule)
        if trainer.sanity_checking:
            return
        for member in self.tracker.update(trainer.current_epoch, module.holdout_mse.tolist()):
            self.states[member] = module.ensemble.member_state(member)
        if self.tracker.should_stop:
            trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"tracker": self.tracker.state_dict(), "states": self.states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.tracker.load_state_dict(state_dict["tracker"])
        self.states = {int(member): dict(state) for member, state in state_dict["states"].items()}

    def restore(self, ensemble: GaussianEnsemble) -> None:
        device = ensemble.input_mean.device
        for member, state in self.states.items():
            ensemble.load_member_state(member, {name: tensor.to(device) for name, tensor in state.items()})


class EpochCheckpoint(L.Callback):
    """Writes the whole fit's state to ``path`` at the end of every epoch, after the holdout check and the
    snapshots (so a resumed fit starts the next epoch), replacing the previous one atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        partial = self.path.with_name(f"{self.path.name}.partial")
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # weights_only=False saves the whole fit state (optimizer, loops) for a bit-exact resume; given explicitly
        # because Lightning 2.6 logs a line at every save where it is left to its default. Loading is safe: both
        # read_fit_checkpoint and Lightning's restore (trainer.fit below) load it with weights_only=True.
        trainer.save_checkpoint(partial, weights_only=False)
        if trainer.is_global_zero:
            os.replace(partial, self.path)


def select_elites(holdout_mse: list[float], count: int) -> list[int]:
    """The ``count`` members with the lowest holdout MSE, best first."""
    return sorted(range(len(holdout_mse)), key=lambda m: holdout_mse[m])[:count]


# --------------------------------------------------------------------------- fit


@dataclass
class FitResult:
    epochs: int
    best_epochs: list[int]
    stopped_early: bool
    global_rank_zero: bool


@contextmanager
def lightning_info_silenced(silenced: bool):
    """Without a progress bar, Lightning's start-up banners (accelerator, logger tips) are noise too."""
    if not silenced:
        yield
        return
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def fit_ensemble(
    ensemble: GaussianEnsemble,
    split: TrainingSplit,
    config: DynamicsConfig,
    progress: bool = True,
    log_dir: str | None = None,
    resume_path: Path | None = None,
    **trainer_kwargs,
) -> FitResult:
    """Train ``ensemble`` in place with a Lightning Trainer (``trainer_kwargs`` pass through:
    accelerator, devices, strategy, num_nodes, logger...); restores the snapshots. With ``resume_path``
    the fit checkpoints there every epoch, and continues from the checkpoint it finds there."""
    from lightning.pytorch.loggers import TensorBoardLogger

    data = EnsembleDataModule(split, config)
    tracker = SnapshotTracker(ensemble.ensemble_size, config.improvement_threshold, config.patience)
    snapshots = MemberSnapshots(tracker)
    options: dict[str, Any] = {
        "max_epochs": config.max_epochs,
        "max_time": timedelta(minutes=config.max_fit_minutes) if config.max_fit_minutes else None,
        "precision": LIGHTNING_PRECISION[config.precision],
        "callbacks": [snapshots] + ([EpochCheckpoint(resume_path)] if resume_path else []),
        "enable_checkpointing": False,  # the per-member snapshots are the checkpoints
        "enable_progress_bar": progress,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "log_every_n_steps": 1,  # one log line per block of steps
        "logger": TensorBoardLogger(log_dir, name="logs", version="") if log_dir else False,
    }
    options["callbacks"] += trainer_kwargs.pop("callbacks", None) or []
    options.update(trainer_kwargs)
    checkpoint = resume_path if resume_path is not None and resume_path.is_file() else None
    with lightning_info_silenced(not progress), warnings.catch_warnings():
        # Lightning 2.6 + torch 2.13 warn about a deprecated pytree API inside Lightning itself.
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        trainer = L.Trainer(**options)
        module = EnsembleLightningModule(ensemble, config)
        trainer.fit(module, datamodule=data, ckpt_path=checkpoint, weights_only=True)  # a resume runs no pickled code
    snapshots.restore(ensemble)
    return FitResult(
        epochs=trainer.current_epoch,
        best_epochs=list(tracker.best_epoch),
        stopped_early=tracker.should_stop,
        global_rank_zero=trainer.is_global_zero,
    )


def read_fit_checkpoint(path: Path, ensemble: GaussianEnsemble) -> tuple[int | None, str]:
    """(epochs the fit checkpoint at ``path`` has done, "") if it can resume ``ensemble``'s fit, else
    (None, why not): unreadable, or weights of other shapes (written by another version of this code)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        weights = {name.removeprefix("ensemble."): tensor for name, tensor in checkpoint["state_dict"].items()}
        expected = ensemble.state_dict()
        if weights.keys() != expected.keys() or any(weights[n].shape != expected[n].shape for n in expected):
            return None, "its weights do not match this ensemble"
        return epochs_done(checkpoint), ""
    except Exception as error:  # a damaged or foreign file: the fit starts again, saying why
        return None, f"unreadable: {type(error).__name__}: {error}"
