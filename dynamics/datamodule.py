"""The ensemble's data as a LightningDataModule: the holdout split and the training batches.

The split is MBPO/MOPO's (``bnn.py``): hold out min(20% of N, 1000) transitions (here whole
contiguous segments, so open-loop errors can be measured on them); every member trains on its own
bootstrap resample of the training rows, reshuffled each epoch.

An epoch is cut into batches of ``batch_size`` rows per member, and handed to Lightning
``STEPS_PER_BLOCK`` batches at a time as one block already gathered on the training device: the
LightningModule takes one optimizer step per batch of a block, so Lightning's per-batch loop
(hooks, logging, device transfer) runs once per block instead of once per step.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

import lightning as L
import torch

from dynamics.config import DynamicsConfig
from mbrl_core.data import TransitionData
from mbrl_core.normalization import Normalizer

# optimizer steps per block handed to the LightningModule: enough to make Lightning's per-batch
# overhead negligible, small enough for a progress bar that moves (about 12 MB per block at Hopper size)
STEPS_PER_BLOCK = 32

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
        moved: dict[str, Any] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            moved[field.name] = value.to(device) if torch.is_tensor(value) else value
        return TrainingSplit(**moved)

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


class MemberOrder:
    """Row indices [E, N] of one epoch: each member walks its own bootstrap resample (or the plain
    rows) in a fresh random order every epoch. Drawn on the CPU from one seeded generator, so the
    order is the same on every device and every rank."""

    def __init__(self, n_rows: int, ensemble_size: int, bootstrap: bool, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        if bootstrap:
            self.rows = torch.randint(n_rows, (ensemble_size, n_rows), generator=self.generator)
        else:
            self.rows = torch.arange(n_rows).expand(ensemble_size, n_rows)

    def next_epoch(self) -> torch.Tensor:
        order = torch.rand(self.rows.shape, generator=self.generator).argsort(dim=1)
        return torch.gather(self.rows, 1, order)


@dataclass
class TrainBlock:
    """``steps`` consecutive batches, one per optimizer step: [steps, E, B, ...] on the training device."""

    inputs: torch.Tensor
    targets: torch.Tensor
    terminals: torch.Tensor

    @property
    def steps(self) -> int:
        return self.inputs.shape[0]


def rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class TrainBlocks:
    """The training 'loader': each pass is one epoch of :class:`MemberOrder`, cut into batches of
    ``batch_size`` rows (the last one may be short) and grouped into blocks of ``steps_per_block``
    batches. Under DDP rank r takes batches r, r + world, ... (every rank the same count)."""

    def __init__(self, split: TrainingSplit, order: MemberOrder, batch_size: int, steps_per_block: int) -> None:
        self.split, self.order = split, order
        self.batch_size, self.steps_per_block = batch_size, steps_per_block

    def block_batch_ids(self) -> list[list[int]]:
        """This rank's batches of an epoch, grouped into blocks. Rank r takes batch j * world + r of
        every round j; blocks are groups of rounds, the same on every rank (DDP needs every rank to
        take as many steps per block), and the round holding the short last batch is a block of its own."""
        rank, world = rank_and_world()
        n_rows = self.order.rows.shape[1]
        n_batches = -(-n_rows // self.batch_size)
        rounds = n_batches // world  # a last incomplete round is left out, as every rank must step alike
        short_last = n_rows % self.batch_size != 0 and rounds * world == n_batches
        full_rounds = rounds - int(short_last)
        blocks = [
            [j * world + rank for j in range(first, min(first + self.steps_per_block, full_rounds))]
            for first in range(0, full_rounds, self.steps_per_block)
        ]
        return blocks + ([[(rounds - 1) * world + rank]] if full_rounds < rounds else [])

    def __len__(self) -> int:
        return len(self.block_batch_ids())

    def __iter__(self) -> Iterator[TrainBlock]:
        rows = self.order.next_epoch().to(self.split.train_inputs.device)
        size = self.batch_size
        for block in self.block_batch_ids():
            index = torch.stack([rows[:, b * size : (b + 1) * size] for b in block])  # [steps, E, B]
            yield TrainBlock(
                self.split.train_inputs[index], self.split.train_targets[index], self.split.train_terminals[index]
            )


class WholeHoldout:
    """The validation 'loader': one batch, the whole holdout (inputs, targets)."""

    def __init__(self, split: TrainingSplit) -> None:
        self.batch = (split.holdout_inputs, split.holdout_targets)

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        yield self.batch


# --------------------------------------------------------------------------- the DataModule


class EnsembleDataModule(L.LightningDataModule):
    """Owns the split and the batch order; moves the split to the training device once, in ``setup``.
    Validation is one batch: the whole holdout, identical on every rank."""

    def __init__(self, split: TrainingSplit, config: DynamicsConfig, steps_per_block: int = STEPS_PER_BLOCK) -> None:
        super().__init__()
        self.split = split
        self.batch_size, self.steps_per_block = config.batch_size, steps_per_block
        self.order = MemberOrder(split.train_inputs.shape[0], config.ensemble_size, config.bootstrap, config.seed)
        self.on_device = split

    def setup(self, stage: str) -> None:
        if self.trainer is not None:
            self.on_device = self.split.to(self.trainer.strategy.root_device)

    def train_dataloader(self) -> TrainBlocks:
        return TrainBlocks(self.on_device, self.order, self.batch_size, self.steps_per_block)

    def val_dataloader(self) -> WholeHoldout:
        return WholeHoldout(self.on_device)

    def state_dict(self) -> dict[str, Any]:
        """The batch order's generator (the bootstrap rows are drawn again from the seed): in a resumed fit
        the next epoch's order is the one the uninterrupted fit would have drawn."""
        return {"order_generator": self.order.generator.get_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.order.generator.set_state(state_dict["order_generator"])
