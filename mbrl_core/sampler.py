"""Samplers: where the trainer's batches come from.

The trainer only knows the :class:`Sampler` protocol. Model-free learners get a
:class:`RealSampler`; model-based ones get a mixed sampler (see
``mbrl_core.model_buffer``) whose ``prepare`` refreshes model rollouts.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from mbrl_core.batch import Batch
from mbrl_core.data import TransitionData
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
