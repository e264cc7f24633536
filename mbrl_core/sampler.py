"""Samplers: where the trainer's batches come from.

The trainer only knows the :class:`Sampler` protocol. Model-free learners get a
:class:`RealSampler`; model-based ones get a :class:`MixedSampler`
(real rows plus rows of the model buffer) whose ``prepare`` refreshes model rollouts.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import torch

from mbrl_core.batch import Batch
from mbrl_core.data import TransitionData
from mbrl_core.errors import ArtifactError, ConfigError
from mbrl_core.model_buffer import ModelBuffer, Slot
from mbrl_core.rollout_store import BackgroundWriter, RolloutGeneration, RolloutStore
from mbrl_core.seeding import make_generator


class Sampler(Protocol):
    batch_size: int

    def prepare(self, step: int, learner: Any) -> dict[str, float]:
        """Called before each update with the number of updates done so far; returns metrics to log."""

    def sample(self) -> Batch:
        """Draw one batch on the training device."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed for an exact resume (random state, buffers)."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def close(self) -> None:
        """Flush and release resources (background writers)."""


class RealSampler:
    """Uniform draws from a dataset already on the training device: an index draw and a gather."""

    def __init__(self, data: TransitionData, batch_size: int = 256, seed: int = 0) -> None:
        self.data = data
        self.batch_size = batch_size
        self.generator = make_generator(seed, data.device)

    def prepare(self, step: int, learner: Any) -> dict[str, float]:
        return {}

    def sample_size(self, size: int) -> Batch:
        index = torch.randint(len(self.data), (size,), device=self.data.device, generator=self.generator)
        data = self.data
        return Batch(
            observations=data.observations[index],
            actions=data.actions[index],
            rewards=data.rewards[index],
            next_observations=data.next_observations[index],
            terminals=data.terminals[index],
        )

    def sample(self) -> Batch:
        return self.sample_size(self.batch_size)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])

    def close(self) -> None:
        pass


class RolloutSource(Protocol):
    """What builds new generations (the model-rollout generator the application hands in).

    Its state makes resume exact.
    """

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
            assert self.replay is not None  # replay_numbers come from the replay store
            generation = self.replay.read_generation(self.replay_numbers[number]).to(self.buffer.device)
            generation.number = number
            self.buffer.add(generation, source="replay")
        else:
            if self.source is None:
                replayed = self.replay.url if self.replay is not None else "store"
                raise ArtifactError(
                    f"the replayed store {replayed} ran out of generations and no dynamics model is available"
                )
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
        assert self.writer is not None and self.store is not None  # only called when writing
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
                raise ArtifactError(
                    "this checkpoint replayed rollouts from a store; pass the same --rollouts to resume it"
                )
            generation = self.replay.read_generation(self.replay_numbers[slot.number])
            generation.number = slot.number
        else:
            if self.store is None:
                raise ArtifactError("this checkpoint's rollouts lived in a store that this sampler does not have")
            generation = self.store.read_generation(slot.number)
        return generation  # the buffer checks its length against the slot

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
