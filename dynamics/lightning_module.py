"""Training the ensemble with Lightning: the holdout split, the batch iterable,
a thin LightningModule, the per-member snapshot / early-stopping callback and
the fit function.

The recipe is MBPO/MOPO's (``bnn.py``): hold out min(20% of N, 1000)
transitions; fit the input normalizer on the training split only; every member
trains on its own bootstrap resample, reshuffled each epoch; loss = sum over
members of the Gaussian NLL + 0.01 (sum max_lv - sum min_lv) + L2 decay; after
each epoch a member's weights are snapshotted when its holdout MSE improves by
more than 1%, training stops after 5 epochs without any snapshot, the snapshots
are restored, and the elites are the members with the lowest holdout MSE.
"""

from __future__ import annotations

import logging
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, fields

import lightning as L
import torch
import torch.nn.functional as F

from dynamics.config import DynamicsConfig
from dynamics.ensemble import GaussianEnsemble, gaussian_nll, member_mse
from mbrl_core.data import TransitionData
from mbrl_core.normalization import Normalizer

# --------------------------------------------------------------------------- the split


@dataclass
class TrainingSplit:
    """Inputs (s, a), targets (s' - s, r) and terminal flags, split into train and holdout rows.

    Holdout rows are ordered segment by segment (contiguous steps of one episode);
    ``holdout_segment_starts`` / ``holdout_segment_lengths`` locate the segments.
    """

    train_inputs: torch.Tensor
    train_targets: torch.Tensor
    train_terminals: torch.Tensor
    holdout_inputs: torch.Tensor
    holdout_targets: torch.Tensor
    holdout_terminals: torch.Tensor
    holdout_segment_starts: torch.Tensor
    holdout_segment_lengths: torch.Tensor
    obs_dim: int

    def to(self, device: torch.device | str) -> TrainingSplit:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return TrainingSplit(**{name: v.to(device) if torch.is_tensor(v) else v for name, v in moved.items()})

    def input_normalizer(self) -> Normalizer:
        """Mean/std of the training inputs; constant dims keep std 1 (as MBPO's scaler)."""
        fitted = Normalizer.fit(self.train_inputs, eps=0.0)
        return Normalizer(fitted.mean, torch.where(fitted.std < 1e-12, torch.ones_like(fitted.std), fitted.std))


def model_inputs(observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    return torch.cat([observations, actions], dim=-1)


def model_targets(data: TransitionData) -> torch.Tensor:
    return torch.cat([data.next_observations - data.observations, data.rewards.unsqueeze(-1)], dim=-1)


def holdout_size(n_transitions: int, config: DynamicsConfig) -> int:
    return min(int(n_transitions * config.holdout_ratio), config.max_holdout)


def segment_ids(episode_starts: torch.Tensor, segment_length: int) -> torch.Tensor:
    """Id of the segment of every transition: episodes cut into pieces of ``segment_length`` steps."""
    index = torch.arange(episode_starts.shape[0], device=episode_starts.device)
    last_start = torch.cummax(torch.where(episode_starts > 0, index, torch.zeros_like(index)), dim=0).values
    step_in_episode = index - last_start
    return torch.cumsum((step_in_episode % segment_length == 0).long(), dim=0) - 1


def make_split(data: TransitionData, config: DynamicsConfig, generator: torch.Generator) -> TrainingSplit:
    """Hold out random whole segments until ``holdout_size`` rows (the last segment may be cut)."""
    cpu = data.to("cpu")
    n = len(cpu)
    n_holdout = holdout_size(n, config)
    segments = segment_ids(cpu.episode_starts, config.holdout_segment)
    rank_of_segment = torch.empty(int(segments[-1]) + 1, dtype=torch.long)
    rank_of_segment[torch.randperm(rank_of_segment.shape[0], generator=generator)] = torch.arange(
        rank_of_segment.shape[0]
    )
    # rows sorted by their segment's random rank, then by time: holdout = the first n_holdout
    order = torch.argsort(rank_of_segment[segments] * n + torch.arange(n))
    holdout_rows, train_rows = order[:n_holdout], order[n_holdout:].sort().values
    holdout_segments = segments[holdout_rows]
    is_start = torch.ones(n_holdout, dtype=torch.bool)
    is_start[1:] = holdout_segments[1:] != holdout_segments[:-1]
    starts = torch.nonzero(is_start).squeeze(1)
    lengths = torch.diff(torch.cat([starts, torch.tensor([n_holdout])]))
    inputs, targets = model_inputs(cpu.observations, cpu.actions), model_targets(cpu)
    return TrainingSplit(
        train_inputs=inputs[train_rows],
        train_targets=targets[train_rows],
        train_terminals=cpu.terminals[train_rows],
        holdout_inputs=inputs[holdout_rows],
        holdout_targets=targets[holdout_rows],
        holdout_terminals=cpu.terminals[holdout_rows],
        holdout_segment_starts=starts,
        holdout_segment_lengths=lengths,
        obs_dim=cpu.obs_dim,
    )


# --------------------------------------------------------------------------- batches


class MemberBatches:
    """Index batches [E, B] into the training rows: each member walks its own
    bootstrap resample (or the plain rows) in a fresh random order every epoch.
    Under DDP each rank takes every world_size-th batch."""

    def __init__(self, n_rows: int, ensemble_size: int, batch_size: int, bootstrap: bool, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        if bootstrap:
            self.rows = torch.randint(n_rows, (ensemble_size, n_rows), generator=self.generator)
        else:
            self.rows = torch.arange(n_rows).expand(ensemble_size, n_rows)
        self.batch_size = batch_size

    def _rank_and_world(self) -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _batches_per_rank(self, world: int) -> int:
        return math.ceil(self.rows.shape[1] / self.batch_size) // world

    def __len__(self) -> int:
        return self._batches_per_rank(self._rank_and_world()[1])

    def __iter__(self):
        rank, world = self._rank_and_world()
        order = torch.rand(self.rows.shape, generator=self.generator).argsort(dim=1)
        shuffled = torch.gather(self.rows, 1, order)
        for batch in range(rank, self._batches_per_rank(world) * world, world):
            yield shuffled[:, batch * self.batch_size : (batch + 1) * self.batch_size]


class WholeHoldout:
    """The validation 'loader': one batch, the whole holdout (identical on every rank)."""

    def __len__(self) -> int:
        return 1

    def __iter__(self):
        yield torch.zeros(0)


# --------------------------------------------------------------------------- module


class EnsembleLightningModule(L.LightningModule):
    """Thin Lightning wrapper: the loss and the holdout metrics; the model is a plain nn.Module."""

    def __init__(self, ensemble: GaussianEnsemble, split: TrainingSplit, config: DynamicsConfig) -> None:
        super().__init__()
        self.ensemble = ensemble
        self.split = split
        self.config = config
        self.holdout_mse = torch.full((ensemble.ensemble_size,), math.inf)

    def on_fit_start(self) -> None:
        self.split = self.split.to(self.device)

    def training_step(self, member_rows: torch.Tensor, batch_idx: int) -> torch.Tensor:
        inputs, targets = self.split.train_inputs[member_rows], self.split.train_targets[member_rows]
        out = self.ensemble(inputs)
        nll = gaussian_nll(out.mean, out.logvar, targets).sum()
        loss = nll + self.ensemble.logvar_bound_loss(self.config.logvar_bound_coef) + self.ensemble.weight_decay_loss()
        if out.terminal_logit is not None:
            terminal_targets = self.split.train_terminals[member_rows]
            loss = (
                loss
                + F.binary_cross_entropy_with_logits(out.terminal_logit, terminal_targets, reduction="none")
                .mean(dim=1)
                .sum()
            )
        self.log("train/loss", loss.detach(), prog_bar=True)
        return loss

    def validation_step(self, unused_batch: torch.Tensor, batch_idx: int) -> None:
        out = self.ensemble(self.split.holdout_inputs)
        self.holdout_mse = member_mse(out.mean, self.split.holdout_targets).cpu()
        # batch_size=1: the placeholder batch is empty, and Lightning would weight the epoch mean by 0 (NaN)
        self.log("holdout/mse_best_member", self.holdout_mse.min(), prog_bar=True, batch_size=1)
        self.log("holdout/mse_mean", self.holdout_mse.mean(), batch_size=1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # plain Adam: the per-layer L2 decay is part of the loss, as in MOPO
        return torch.optim.Adam(self.ensemble.parameters(), lr=self.config.learning_rate)


# --------------------------------------------------------------------------- snapshots, elites


class SnapshotTracker:
    """Per-member best holdout MSE; a member improves when (best - mse) / best > threshold.
    ``should_stop`` once ``patience`` epochs in a row improved no member."""

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
        return self.epochs_without_improvement >= self.patience


class MemberSnapshots(L.Callback):
    """Keeps each member's best weights and stops training when no member improves any more."""

    def __init__(self, tracker: SnapshotTracker) -> None:
        self.tracker = tracker
        self.states: dict[int, dict[str, torch.Tensor]] = {}

    def on_validation_epoch_end(self, trainer: L.Trainer, module: EnsembleLightningModule) -> None:
        if trainer.sanity_checking:
            return
        for member in self.tracker.update(trainer.current_epoch, module.holdout_mse.tolist()):
            self.states[member] = module.ensemble.member_state(member)
        if self.tracker.should_stop:
            trainer.should_stop = True

    def restore(self, ensemble: GaussianEnsemble) -> None:
        device = ensemble.input_mean.device
        for member, state in self.states.items():
            ensemble.load_member_state(member, {name: tensor.to(device) for name, tensor in state.items()})


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
    **trainer_kwargs,
) -> FitResult:
    """Train ``ensemble`` in place with a Lightning Trainer (``trainer_kwargs`` pass through:
    accelerator, devices, strategy, num_nodes, precision, logger...); restores the snapshots."""
    from lightning.pytorch.loggers import TensorBoardLogger

    batches = MemberBatches(
        split.train_inputs.shape[0], ensemble.ensemble_size, config.batch_size, config.bootstrap, config.seed
    )
    tracker = SnapshotTracker(ensemble.ensemble_size, config.improvement_threshold, config.patience)
    snapshots = MemberSnapshots(tracker)
    options = {
        "max_epochs": config.max_epochs,
        "callbacks": [snapshots],
        "enable_checkpointing": False,  # the per-member snapshots are the checkpoints
        "enable_progress_bar": progress,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "log_every_n_steps": max(1, min(50, len(batches))),
        "logger": TensorBoardLogger(log_dir, name="logs", version="") if log_dir else False,
    }
    options.update(trainer_kwargs)
    if trainer_kwargs.get("callbacks"):
        options["callbacks"] = [snapshots, *trainer_kwargs["callbacks"]]
    with lightning_info_silenced(not progress), warnings.catch_warnings():
        # Lightning 2.6 + torch 2.13 warn about a deprecated pytree API inside Lightning itself.
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        trainer = L.Trainer(**options)
        trainer.fit(
            EnsembleLightningModule(ensemble, split, config), train_dataloaders=batches, val_dataloaders=WholeHoldout()
        )
    snapshots.restore(ensemble)
    return FitResult(
        epochs=trainer.current_epoch,
        best_epochs=list(tracker.best_epoch),
        stopped_early=tracker.should_stop,
        global_rank_zero=trainer.is_global_zero,
    )
