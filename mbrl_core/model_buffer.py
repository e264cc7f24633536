"""The model buffer: the most recent rollout rows in memory, a FIFO of rows.

As MOPO's model pool (tianheyu927/mopo ``mopo/algorithms/mopo.py`` ``_reallocate_model_pool``:
``model_retain_epochs * rollout_length * rollout_batch_size`` rows, a FIFO ``SimpleReplayPool``)
and OfflineRL-Kit's ``fake_buffer`` (``offlinerlkit/buffer/buffer.py`` ``add_batch``: a ring
that overwrites its oldest rows), the capacity is counted in ROWS: when rollouts end early
(terminations, MOReL's halting) a generation is shorter and the buffer keeps more of them.
A new generation overwrites the oldest rows, so the oldest generation still held may
have lost its first rows (those of its first rollout steps).

The buffer is a ring of preallocated tensors on the training device. Each
generation is written contiguously after the previous one (wrapping around),
so the live rows are always one circular segment ``[head, head + size)``: a
uniform draw is one ``randint``, a modulo and a gather, whatever the number of
generations. Where each generation's live rows sit is its :class:`Slot`, which
is all a checkpoint needs to rebuild the ring exactly from the rollout stores.

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

from mbrl_core.batch import TRANSITION_FIELDS, Batch
from mbrl_core.errors import ArtifactError, ConfigError
from mbrl_core.rollout_store import RolloutGeneration

# Columns of the ring; uncertainty features are added per name.
RING_COLUMNS = TRANSITION_FIELDS


@dataclass
class Slot:
    """Where one generation's live rows sit in the ring, and where it can be reloaded from."""

    source: str  # "own" (this run's store) or "replay" (the store given with --rollouts)
    number: int
    offset: int  # ring position of the first live row
    length: int  # live rows
    skip: int = 0  # rows at the generation's start already overwritten by newer generations

    @property
    def generation_rows(self) -> int:
        return self.skip + self.length


class ModelBuffer:
    """A FIFO of the last ``capacity`` rollout rows, kept generation by generation."""

    def __init__(self, capacity: int, device: torch.device | str) -> None:
        if capacity <= 0:
            raise ConfigError(f"model buffer needs a positive capacity (got {capacity} rows)")
        self.capacity = capacity
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
        """Append ``generation`` after the newest one, overwriting the oldest rows as needed."""
        length = len(generation)
        if length > self.capacity:
            raise ConfigError(
                f"a rollout generation of {length} rows does not fit the model buffer ({self.capacity} rows)"
            )
        offset = (self.head + len(self)) % self.capacity
        self._evict(len(self) + length - self.capacity)
        self.place(generation, Slot(source, generation.number, offset, length))

    def _evict(self, rows: int) -> None:
        """Forget the ``rows`` oldest rows: whole generations, then the front of the next one."""
        while rows > 0 and self.slots:
            oldest = self.slots[0]
            if oldest.length <= rows:
                rows -= oldest.length
                self.slots.popleft()
            else:
                oldest.offset = (oldest.offset + rows) % self.capacity
                oldest.skip += rows
                oldest.length -= rows
                rows = 0

    def place(self, generation: RolloutGeneration, slot: Slot) -> None:
        """Write the live rows of ``generation`` (all but its first ``slot.skip``) at ``slot.offset``;
        also how a resume rebuilds the exact ring."""
        if len(generation) != slot.generation_rows:
            raise ArtifactError(
                f"generation {slot.number} in the rollout store has {len(generation)} rows, the "
                f"checkpoint expects {slot.generation_rows}"
            )
        if not self.columns:
            self._allocate(generation)
        if set(generation.uncertainty) != set(self.uncertainty):
            raise ArtifactError(
                f"generation {generation.number} has uncertainty features "
                f"{sorted(generation.uncertainty)}, the buffer holds {sorted(self.uncertainty)}"
            )
        rows = (torch.arange(slot.length, device=self.device) + slot.offset) % self.capacity
        live = slice(slot.skip, slot.generation_rows)
        for name, column in self.columns.items():
            column[rows] = getattr(generation, name)[live].to(self.device, torch.float32)
        for name, column in self.uncertainty.items():
            column[rows] = generation.uncertainty[name][live].to(self.device, torch.float32)
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
