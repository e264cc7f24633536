"""What the trainer needs from a learner, and what a learner is told about its data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from mbrl_core.batch import Batch
from mbrl_core.data import TransitionData
from mbrl_core.normalization import Normalizer


@dataclass
class LearnerContext:
    """Facts about the task a learner is built for (not hyperparameters).

    ``extras`` carries values a model-based run derives from its dynamics model
    (for example MOReL's disagreement threshold) without the learners
    importing the model.
    """

    obs_dim: int
    act_dim: int
    action_low: torch.Tensor
    action_high: torch.Tensor
    observation_normalizer: Normalizer
    total_steps: int
    device: torch.device
    reward_min: float = 0.0
    reward_max: float = 0.0
    episode_return_min: float = 0.0
    episode_return_max: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_data(cls, data: TransitionData, total_steps: int, device: torch.device) -> LearnerContext:
        returns = data.episode_returns()
        space = data.info.action_space
        return cls(
            obs_dim=data.obs_dim,
            act_dim=data.act_dim,
            action_low=torch.as_tensor(space.low, dtype=torch.float32, device=device).reshape(-1),
            action_high=torch.as_tensor(space.high, dtype=torch.float32, device=device).reshape(-1),
            observation_normalizer=data.observation_normalizer().to(device),
            total_steps=total_steps,
            device=device,
            reward_min=float(data.rewards.min()),
            reward_max=float(data.rewards.max()),
            episode_return_min=float(returns.min()),
            episode_return_max=float(returns.max()),
        )


class Learner(Protocol):
    """Every algorithm is an object with these four methods; the trainer owns everything else."""

    def update(self, batch: Batch) -> dict[str, float]:
        """One gradient step; returns scalar metrics (plain floats or 0-dim tensors)."""

    def act(self, observations: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Actions for a batch of raw observations, in the environment's action units."""

    def state_dict(self) -> dict[str, Any]:
        """Networks, optimizers, schedulers and counters: enough for an exact resume."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
