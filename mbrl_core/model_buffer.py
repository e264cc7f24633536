"""The model buffer: recent rollout generations in memory.

The buffer is a ring of preallocated tensors on the training device. Each
generation is written contiguously after the previous one (wrapping around),
so the live rows are always one circular segment ``[head, head + size)``: a
uniform draw is one ``randint``, a modulo and a gather, whatever the number of
generations. Adding a generation first evicts the oldest ones until it fits
and at most ``retain_generations`` remain (MOPO's ``model_retain_epochs``).

The mixed sampler (:class:`mbrl_core.sampler.MixedSampler`) draws ``round(real_fraction * batch_size)`` rows from
the dataset and the rest from the buffer, every ``refresh_every`` updates adds
a new generation (generated under the current policy, or replayed from an
earlier store), and hands the learner raw rewards plus the uncertainty
features: penalties are applied by the learner on the sampled batch, so one set
of rollouts serves any penalty coefficient or threshold.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import torch

from mbrl_core.batch import Batch
from mbrl_core.errors import ArtifactError, ConfigError
from mbrl_core.rollout_store import RolloutGeneration

# Columns of the ring; uncertainty features are added per name.
RING_COLUMNS = ("observations", "actions", "rewards", "next_observations", "terminals")


@dataclass
class Slot:
    """Where one generation sits in the ring, and where it can be reloaded from."""

    source: str  # "own" (this run's store) or "replay" (the store given with --rollouts)
    number: int
    offset: int
    length: int


class ModelBuffer:
    """A bounded FIFO of the last ``retain_generations`` rollout generations."""

    def __init__(self, capacity: int, retain_generations: int, device: torch.device | str) -> None:
        if capacity <= 0 or retain_generations <= 0:
            raise ConfigError(
                f"model buffer needs a positive capacity and retain_generations (got {capacity}, {retain_generations})"
            )
        self.capacity = capacity
        self.retain_generations = retain_generations
        self.device = torch.device(device)
        self.columns: dict[str, torch.Tensor] = {}
        self.uncertainty: dict[str, torch.Tensor] = {}
        self.slots: deque[Slot] = deque()

    def __len__(self) -> int:
        return sum(slot.length for slot in self.slots)

    @property
    def head(self) -> int:
        return self.slots[0].offset if self.slots else 0

    def _allocate(self, generation: RolloutGeneration) -> None:
        """Allocate the ring on the first generation, shaped like it."""
        for name in RING_COLUMNS:
            example = getattr(generation, name)
            self.columns[name] = torch.zeros(
                (self.capacity,) + tuple(example.shape[1:]), dtype=torch.float32, device=self.device
            )
        for name in generation.uncertainty:
            self.uncertainty[name] = torch.zeros(self.capacity, dtype=torch.float32, device=self.device)

    def add(self, generation: RolloutGeneration, source: str = "own") -> None:
        """Append ``generation`` after the newest one, evicting the oldest as needed."""
        length = len(generation)
        if length > self.capacity:
            raise ConfigError(
                f"a rollout generation of {length} rows does not fit the model buffer ({self.capacity} rows)"
            )
        while self.slots and (len(self.slots) >= self.retain_generations or len(self) + length > self.capacity):
            self.slots.popleft()
        offset = (self.slots[-1].offset + self.slots[-1].length) % self.capacity if self.slots else 0
        self.place(generation, Slot(source, generation.number, offset, length))

    def place(self, generation: RolloutGeneration, slot: Slot) -> None:
        """Write ``generation`` at ``slot.offset`` (also how a resume rebuilds the exact ring)."""
        if not self.columns:
            self._allocate(generation)
        if set(generation.uncertainty) != set(self.uncertainty):
            raise ArtifactError(
                f"generation {generation.number} has uncertainty features "
                f"{sorted(generation.uncertainty)}, the buffer holds {sorted(self.uncertainty)}"
            )
        rows = (torch.arange(slot.length, device=self.device) + slot.offset) % self.capacity
        for name, column in self.columns.items():
            column[rows] = getattr(generation, name).to(self.device, torch.float32)
        for name, column in self.uncertainty.items():
            column[rows] = generation.uncertainty[name].to(self.device, torch.float32)
        self.slots.append(slot)

    def sample(self, size: int, generator: torch.Generator) -> Batch:
        """``size`` rows drawn uniformly from the live rows, marked synthetic."""
        if not self.slots:
            raise RuntimeError("the model buffer is empty: add a rollout generation before sampling")
        rows = (torch.randint(len(self), (size,), device=self.device, generator=generator) + self.head) % self.capacity
        columns = self.columns
        return Batch(
            observations=columns["observations"][rows],
            actions=columns["actions"][rows],
            rewards=columns["rewards"][rows],
            next_observations=columns["next_observations"][rows],
            terminals=columns["terminals"][rows],
            synthetic=torch.ones(size, dtype=torch.bool, device=self.device),
            uncertainty={name: column[rows] for name, column in self.uncertainty.items()},
        )

    def layout(self) -> list[dict[str, Any]]:
        return [vars(slot).copy() for slot in self.slots]
