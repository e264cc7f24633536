"""Behaviour cloning: the floor every offline learner must beat.

    L_π = E[(π(s) - a)²]

Defaults: CORL ``any_percent_bc.py`` (2x256 ReLU actor with a tanh output,
lr 3e-4, states normalized).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from mbrl_core.batch import Batch
from mbrl_core.learner import LearnerContext
from policies.base import LearnerBase, LearnerConfig, adam
from policies.networks import DeterministicActor


@dataclass
class BCConfig(LearnerConfig):
    hidden_sizes: tuple[int, ...] = (256, 256)
    actor_lr: float = 3e-4
    normalize_observations: bool = True


class BC(LearnerBase):
    config: BCConfig

    def __init__(self, config: BCConfig, context: LearnerContext) -> None:
        super().__init__(config, context)
        self.nets["actor"] = DeterministicActor(context.obs_dim, context.act_dim, config.hidden_sizes)
        self.finish_setup()
        self.optimizers = {"actor": adam(self.nets["actor"], config.actor_lr)}

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.updates += 1
        observations = self.observation_normalizer(batch.observations)
        actions = self.action_scaler.to_unit(batch.actions)
        loss = F.mse_loss(self.nets["actor"](observations), actions)
        self.step({"actor": loss})
        return {"actor_loss": loss.detach()}

    def policy_actions(self, observations: torch.Tensor, deterministic: bool) -> torch.Tensor:
        return self.nets["actor"](observations)
