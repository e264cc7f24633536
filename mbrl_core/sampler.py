"""Samplers: where the trainer's batches come from.

The trainer only knows the :class:`Sampler` protocol. Model-free learners get a
:class:`RealSampler`; model-based ones get a :class:`MixedSampler`
(real rows plus rows of the model buffer) whose ``prepare`` refreshes model rollouts.
"""

from __future__ import annotations

import copy
import threading
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
        """A new generation under the learner's policy (``learner.act`` is all a source may use: in the
        background it gets a frozen copy behind a cancellable wrapper). Every random draw, the policy's
        included, must come from the source's own state, never from the global RNG."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class GenerationCancelled(Exception):
    """Raised inside a background generation that the sampler no longer wants (the run is closing)."""


class _CancellableActor:
    """The policy snapshot as the rollout source sees it: ``act`` stops the generation once cancelled."""

    def __init__(self, snapshot: Any, cancelled: threading.Event) -> None:
        self.snapshot = snapshot
        self.cancelled = cancelled

    def act(self, observations: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        if self.cancelled.is_set():
            raise GenerationCancelled
        return self.snapshot.act(observations, deterministic=deterministic)


class BackgroundGeneration:
    """One generation being built on a worker thread under a frozen copy of the policy.

    ``source_state`` is the source's random state when it started and ``snapshot`` the policy copy: together
    they determine the generation, which is how a checkpoint taken while it runs can rebuild it exactly.
    """

    def __init__(self, source: RolloutSource, snapshot: Any, number: int, policy_step: int) -> None:
        self.source = source
        self.snapshot = snapshot
        self.number = number
        self.policy_step = policy_step
        self.source_state = source.state_dict()
        self.cancelled = threading.Event()
        self.result: RolloutGeneration | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._work, name=f"rollout-generation-{number}", daemon=True)
        self.thread.start()

    def _work(self) -> None:
        try:
            actor = _CancellableActor(self.snapshot, self.cancelled)
            self.result = self.source.generate(actor, self.number, self.policy_step)
        except GenerationCancelled:
            pass
        except BaseException as error:  # surfaced on the trainer's thread by join()
            self.error = error

    def join(self) -> RolloutGeneration:
        """Wait for the generation; a failure on the worker is raised here, on the caller's thread."""
        self.thread.join()
        if self.error is not None:
            raise RuntimeError(
                f"background rollout generation {self.number} (policy of update {self.policy_step}) failed: "
                f"{type(self.error).__name__}: {self.error}"
            ) from self.error
        if self.result is None:
            raise RuntimeError(f"background rollout generation {self.number} was cancelled")
        return self.result

    def cancel(self) -> None:
        """Stop at the next policy call and wait for the worker (no result is kept)."""
        self.cancelled.set()
        self.thread.join()

    def state_dict(self) -> dict[str, Any]:
        return {"number": self.number, "policy_step": self.policy_step, "policy": self.snapshot.state_dict()}


class MixedSampler:
    """Batches with a real fraction ``f`` from the dataset and ``1 - f`` from the model buffer.

    ``source`` builds new generations. With ``store`` every generated generation is also written there by
    a background thread. With ``replay``, generation ``g`` of this run is the
    ``g``-th generation of that earlier store (produced under the earlier run's
    policy) for as long as it has one; fresh rollouts are generated after that.

    With ``background`` the rollouts leave the critical path. At the refresh of update
    ``k * refresh_every`` the sampler inserts generation ``k`` (built meanwhile), then takes a deep copy
    of the learner (the policy snapshot) and starts generation ``k + 1`` on a worker thread under it; the
    learner keeps updating, and generation ``k + 1`` is joined and inserted at update ``(k + 1) * refresh_every``.
    Generation 0 is built synchronously at update 0. So, as in MBPO-style asynchronous pipelines, the
    rollout policy lags one refresh period behind the synchronous scheme (a generation's ``policy_step``
    records the update its policy comes from). Nothing depends on thread timing: a generation is a
    function of the snapshot and of the source's own random state (the source draws every random number,
    the policy's action noise included, from its own generator), the learner and the batch draws never
    touch that state, and the insertion step is fixed. The same seed therefore gives the same run, and a
    checkpoint taken while a generation is in flight stores the snapshot's state and the source's state
    at its start, so a resume rebuilds that generation exactly (at the cost of one more learner state in
    the checkpoint). The worker shares torch's intra-op thread pool with the learner.
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
        background: bool = False,
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
        self.background = background
        self.pending: BackgroundGeneration | None = None
        # A checkpoint's in-flight generation, restarted from the learner at the next prepare call.
        self.pending_to_restart: dict[str, Any] | None = None

    # ------------------------------------------------------------------ the hot path

    def prepare(self, step: int, learner: Any) -> dict[str, float]:
        if self.pending_to_restart is not None:
            self._restart_pending(learner)
        if step % self.refresh_every != 0 or step == self.last_refresh_step:
            return {}
        self.last_refresh_step = step
        metrics = self.refresh(step, learner)
        if self.background and self.source is not None and self.generations_done >= len(self.replay_numbers):
            self.pending = BackgroundGeneration(self.source, copy.deepcopy(learner), self.generations_done, step)
        return metrics

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
        if self.replay is not None and number < len(self.replay_numbers):
            generation = self.replay.read_generation(self.replay_numbers[number]).to(self.buffer.device)
            generation.number = number
            self.buffer.add(generation, source="replay")
        else:
            generation = self._own_generation(number, step, learner)
            self.buffer.add(generation, source="own")
            if self.store is not None and self.writer is not None:
                self._align_store(self.store, self.writer, number)
                self.writer.submit(generation)
        self.generations_done += 1
        return self._refresh_metrics(generation, time.perf_counter() - started)

    def _own_generation(self, number: int, step: int, learner: Any) -> RolloutGeneration:
        """Generation ``number``: the background one if it is in flight, else generated now."""
        if self.pending is not None:
            pending, self.pending = self.pending, None
            if pending.number != number:
                raise RuntimeError(f"background generation {pending.number} arrived where {number} was due")
            return pending.join()
        if self.source is None:
            replayed = self.replay.url if self.replay is not None else "the replayed store"
            raise ArtifactError(f"{replayed} ran out of generations and no dynamics model is available")
        return self.source.generate(learner, number, step)

    def _restart_pending(self, learner: Any) -> None:
        """Rebuild the checkpoint's in-flight generation: the policy snapshot it stored, the source as it was."""
        saved, self.pending_to_restart = self.pending_to_restart, None
        assert saved is not None and self.source is not None
        snapshot = copy.deepcopy(learner)
        snapshot.load_state_dict(saved["policy"])
        self.pending = BackgroundGeneration(self.source, snapshot, saved["number"], saved["policy_step"])

    def _align_store(self, store: RolloutStore, writer: BackgroundWriter, number: int) -> None:
        """Before this sampler's first write, forget stored generations numbered ``number`` or later:
        those written after the checkpoint being resumed, or by an earlier run in the same folder."""
        if self.store_aligned:
            return
        writer.flush()
        store.truncate(keep_below=number)
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
        """RNG states, the counters and the buffer's layout; the rows themselves are reloaded from the stores.

        With a generation in flight, the source's state is the one it had when that generation started,
        and ``pending`` holds the policy snapshot: the generation is rebuilt on resume, not read back.
        """
        if self.writer is not None:
            self.writer.flush()  # every generation the layout names must be committed
        source_state: dict[str, Any] | None
        pending_state: dict[str, Any] | None
        if self.pending is not None:
            source_state, pending_state = self.pending.source_state, self.pending.state_dict()
        else:
            source_state = self.source.state_dict() if self.source is not None else None
            pending_state = self.pending_to_restart
        return {
            "real": self.real.state_dict(),
            "generator": self.generator.get_state(),
            "source": source_state,
            "pending": pending_state,
            "generations_done": self.generations_done,
            "last_refresh_step": self.last_refresh_step,
            "layout": self.buffer.layout(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._cancel_pending()
        self.real.load_state_dict(state["real"])
        self.generator.set_state(state["generator"])
        if self.source is not None:
            self.source.load_state_dict(state["source"])
        self.pending_to_restart = state.get("pending")
        if self.pending_to_restart is not None and self.source is None:
            raise ArtifactError("this checkpoint has a rollout generation in flight, and no dynamics model to redo it")
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

    def _cancel_pending(self) -> None:
        if self.pending is not None:
            self.pending.cancel()
            self.pending = None

    def close(self) -> None:
        """Stop a generation nobody will use (the run is over), then flush the store."""
        self._cancel_pending()
        if self.writer is not None:
            self.writer.close()
