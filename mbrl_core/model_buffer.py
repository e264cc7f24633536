"""The model buffer (recent rollout generations in memory) and the mixed real/synthetic sampler.

The buffer is a ring of preallocated tensors on the training device. Each
generation is written contiguously after the previous one (wrapping around),
so the live rows are always one circular segment ``[head, head + size)``: a
uniform draw is one ``randint``, a modulo and a gather, whatever the number of
generations. Adding a generation first evicts the oldest ones until it fits
and at most ``retain_generations`` remain (MOPO's ``model_retain_epochs``).

The :class:`MixedSampler` draws ``round(real_fraction * batch_size)`` rows from
the dataset and the rest from the buffer, every ``refresh_every`` updates adds
a new generation (generated under the current policy, or replayed from an
earlier store), and hands the learner raw rewards plus the uncertainty
features: penalties are applied by the learner on the sampled batch, so one set
of rollouts serves any penalty coefficient or threshold.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from mbrl_core.batch import Batch
from mbrl_core.errors import ArtifactError, ConfigError
from mbrl_core.rollout_store import BackgroundWriter, RolloutGeneration, RolloutStore
from mbrl_core.sampler import RealSampler
from mbrl_core.seeding import make_generator

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
            raise ConfigError(f"model buffer needs a positive capacity and retain_generations (got {capacity}, {retain_generations})")
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
            self.columns[name] = torch.zeros((self.capacity,) + tuple(example.shape[1:]), dtype=torch.float32, device=self.device)
        for name in generation.uncertainty:
            self.uncertainty[name] = torch.zeros(self.capacity, dtype=torch.float32, device=self.device)

    def add(self, generation: RolloutGeneration, source: str = "own") -> None:
        """Append ``generation`` after the newest one, evicting the oldest as needed."""
        length = len(generation)
        if length > self.capacity:
            raise ConfigError(f"a rollout generation of {length} rows does not fit the model buffer ({self.capacity} rows)")
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
                f"generation {generation.number} has uncertainty features {sorted(generation.uncertainty)}, the buffer holds {sorted(self.uncertainty)}"
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


class RolloutSource(Protocol):
    """What builds new generations (``dynamics.rollouts.RolloutGenerator``); its state makes resume exact."""

    def generate(self, learner: Any, number: int, policy_step: int) -> RolloutGeneration:
        """A new generation under the learner's current policy."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class MixedSampler:
    """Batches with a real fraction ``f`` from the dataset and ``1 - f`` from the model buffer.

    ``source`` builds new generations. With ``store`` every generated generation is also written there by
    a background thread. With ``replay``, generation ``g`` of this run is the
    ``g``-th generation of that earlier store (produced under the earlier run's
    policy) for as long as it has one; fresh rollouts are generated after that.
    """

    def __init__(
        self,
        real: RealSampler,
        buffer: ModelBuffer,
        source: RolloutSource | None,
        *,
        batch_size: int,
        real_fraction: float,
        refresh_every: int,
        seed: int = 0,
        store: RolloutStore | None = None,
        replay: RolloutStore | None = None,
    ) -> None:
        if not 0.0 <= real_fraction <= 1.0:
            raise ConfigError(f"rollouts.real_fraction must be within [0, 1] (got {real_fraction})")
        if refresh_every <= 0:
            raise ConfigError(f"rollouts.refresh_every must be positive (got {refresh_every})")
        if source is None and replay is None:
            raise ConfigError("a mixed sampler needs a rollout generator or a store to replay")
        self.real = real
        self.buffer = buffer
        self.source = source
        self.batch_size = batch_size
        self.real_size = int(round(real_fraction * batch_size))
        self.model_size = batch_size - self.real_size
        self.refresh_every = refresh_every
        self.generator = make_generator(seed + 1, buffer.device)
        self.store = store
        self.writer = BackgroundWriter(store) if store is not None else None
        self.replay = replay
        self.replay_numbers = [g["number"] for g in replay.generations] if replay is not None else []
        self.generations_done = 0
        self.last_refresh_step: int | None = None
        self.store_aligned = False

    # ------------------------------------------------------------------ the hot path

    def prepare(self, step: int, learner: Any) -> dict[str, float]:
        if step % self.refresh_every != 0 or step == self.last_refresh_step:
            return {}
        self.last_refresh_step = step
        return self.refresh(step, learner)

    def sample(self) -> Batch:
        synthetic = self.buffer.sample(self.model_size, self.generator)
        if self.real_size == 0:
            return synthetic
        return Batch.concat(self.real.sample_size(self.real_size), synthetic)

    # ------------------------------------------------------------------ refreshing

    def refresh(self, step: int, learner: Any) -> dict[str, float]:
        """Add one generation to the buffer: replayed while the replay store lasts, else generated."""
        started = time.perf_counter()
        number = self.generations_done
        if number < len(self.replay_numbers):
            generation = self.replay.read_generation(self.replay_numbers[number]).to(self.buffer.device)
            generation.number = number
            self.buffer.add(generation, source="replay")
        else:
            if self.source is None:
                raise ArtifactError(f"the replayed store {self.replay.url} ran out of generations and no dynamics model is available")
            generation = self.source.generate(learner, number, step)
            self.buffer.add(generation, source="own")
            if self.writer is not None:
                self._align_store(number)
                self.writer.submit(generation)
        self.generations_done += 1
        return self._refresh_metrics(generation, time.perf_counter() - started)

    def _align_store(self, number: int) -> None:
        """Before this sampler's first write, forget stored generations numbered ``number`` or later:
        those written after the checkpoint being resumed, or by an earlier run in the same folder."""
        if self.store_aligned:
            return
        self.writer.flush()
        self.store.truncate(keep_below=number)
        self.store_aligned = True

    def _refresh_metrics(self, generation: RolloutGeneration, seconds: float) -> dict[str, float]:
        lengths = torch.bincount(generation.rollout_ids).float()
        metrics = {
            "rollouts/transitions": float(len(generation)),
            "rollouts/mean_length": float(lengths[lengths > 0].mean()),
            "rollouts/reward_mean": float(generation.rewards.mean()),
            "rollouts/terminal_fraction": float(generation.terminals.mean()),
            "rollouts/buffer_rows": float(len(self.buffer)),
            "rollouts/seconds": seconds,
        }
        for name, values in generation.uncertainty.items():
            metrics[f"rollouts/{name}_mean"] = float(values.mean())
        return metrics

    # ------------------------------------------------------------------ resume

    def state_dict(self) -> dict[str, Any]:
        """RNG states, the counters and the buffer's layout; the rows themselves are reloaded from the stores."""
        if self.writer is not None:
            self.writer.flush()  # every generation the layout names must be committed
        return {
            "real": self.real.state_dict(),
            "generator": self.generator.get_state(),
            "source": self.source.state_dict() if self.source is not None else None,
            "generations_done": self.generations_done,
            "last_refresh_step": self.last_refresh_step,
            "layout": self.buffer.layout(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.real.load_state_dict(state["real"])
        self.generator.set_state(state["generator"])
        if self.source is not None:
            self.source.load_state_dict(state["source"])
        self.generations_done = state["generations_done"]
        self.last_refresh_step = state["last_refresh_step"]
        self.buffer.slots.clear()
        for entry in state["layout"]:
            self.buffer.place(self._reload(Slot(**entry)), Slot(**entry))

    def _reload(self, slot: Slot) -> RolloutGeneration:
        if slot.source == "replay":
            if self.replay is None:
                raise ArtifactError(f"this checkpoint replayed rollouts from a store; pass the same --rollouts to resume it")
            generation = self.replay.read_generation(self.replay_numbers[slot.number])
            generation.number = slot.number
        else:
            if self.store is None:
                raise ArtifactError("this checkpoint's rollouts lived in a store that this sampler does not have")
            generation = self.store.read_generation(slot.number)
        if len(generation) != slot.length:
            raise ArtifactError(f"generation {slot.number} in the rollout store has {len(generation)} rows, the checkpoint expects {slot.length}")
        return generation

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
