"""Branched model rollouts (MBPO/MOPO): short rollouts of the current policy from real dataset states.

One generation = ``batch_size`` start states drawn uniformly from the dataset,
rolled ``horizon`` steps through the model in one batch per step:

    a_t ~ π(·|s_t)                      the current policy, stochastic (as MOPO's softlearning sampler)
    s_{t+1}, r_t, d_t, u_t = model(s_t, a_t)   next state from ONE random elite per row;
                                        d_t from the model's termination rule; u_t its uncertainty features

A rollout stops after a terminal row (missing terminations in model rollouts
are the most reported reproduction bug) and, for MOReL, after its first
*unknown* row (``halt_feature`` above ``halt_threshold``). Only live rows are
kept, so a generation holds at most ``batch_size * horizon`` transitions, each
with its rollout id and step index. Everything stays on the model's device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from mbrl_core.config import bounded
from mbrl_core.rollout_store import RolloutGeneration
from mbrl_core.seeding import make_generator


@dataclass
class RolloutConfig:
    # MOPO examples/config/d4rl/base.py: rollout_batch_size 50e3, model_train_freq 1000,
    # model_retain_epochs 5, real_ratio 0.05; the horizon is per dataset (configs/<algo>.yaml).
    horizon: int = bounded(5, minimum=1)
    batch_size: int = bounded(50_000, minimum=1)
    refresh_every: int = bounded(1000, minimum=1)
    retain_generations: int = bounded(5, minimum=1)
    real_fraction: float = bounded(0.05, minimum=0.0, maximum=1.0)
    # Zarr chunk length in rows (a chunk of 17-dim observations at 65,536 rows is ~4 MB).
    chunk_rows: int = bounded(65_536, minimum=1)


@dataclass(frozen=True)
class Halting:
    """MOReL's unknown-state detector: halt a rollout where ``uncertainty[feature] > threshold``."""

    feature: str
    threshold: float

    def unknown(self, uncertainty: dict[str, torch.Tensor]) -> torch.Tensor:
        return uncertainty[self.feature] > self.threshold


Act = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def branched_rollouts(
    model: Any,
    act: Act,
    start_observations: torch.Tensor,
    horizon: int,
    generator: torch.Generator,
    halting: Halting | None = None,
) -> dict[str, Any]:
    """Roll every start state up to ``horizon`` steps; returns the live rows of all steps, concatenated.

    ``model.step(obs, actions, generator)`` returns next_observations, rewards,
    terminals (0/1) and an uncertainty dict; ``act(obs)`` samples actions.
    """
    observations = start_observations
    rollout_ids = torch.arange(len(start_observations), device=start_observations.device)
    steps: list[dict[str, Any]] = []
    for index in range(horizon):
        actions = act(observations)
        outcome = model.step(observations, actions, generator)
        steps.append(
            {
                "observations": observations,
                "actions": actions,
                "rewards": outcome.rewards,
                "next_observations": outcome.next_observations,
                "terminals": outcome.terminals,
                "rollout_ids": rollout_ids,
                "step_indices": torch.full_like(rollout_ids, index),
                "uncertainty": outcome.uncertainty,
            }
        )
        alive = outcome.terminals < 0.5
        if halting is not None:
            alive &= ~halting.unknown(outcome.uncertainty)
        observations, rollout_ids = outcome.next_observations[alive], rollout_ids[alive]
        if observations.shape[0] == 0:
            break
    return {
        name: {feature: torch.cat([s[name][feature] for s in steps]) for feature in steps[0][name]}
        if name == "uncertainty"
        else torch.cat([s[name] for s in steps])
        for name in steps[0]
    }


class RolloutGenerator:
    """Builds generation after generation from a dynamics model and the dataset's states.

    Implements ``mbrl_core.model_buffer.RolloutSource``; its random generator
    (start states and model noise) is part of the sampler's saved state.
    """

    def __init__(
        self,
        model: Any,
        start_observations: torch.Tensor,
        horizon: int,
        batch_size: int,
        seed: int = 0,
        halting: Halting | None = None,
    ) -> None:
        self.model = model
        self.start_observations = start_observations
        self.horizon = horizon
        self.batch_size = batch_size
        self.halting = halting
        self.generator = make_generator(seed + 2, start_observations.device)

    def generate(self, learner: Any, number: int, policy_step: int) -> RolloutGeneration:
        picks = torch.randint(
            len(self.start_observations),
            (self.batch_size,),
            device=self.start_observations.device,
            generator=self.generator,
        )

        def act(observations: torch.Tensor) -> torch.Tensor:
            return learner.act(observations, deterministic=False)

        rows = branched_rollouts(
            self.model, act, self.start_observations[picks], self.horizon, self.generator, self.halting
        )
        return RolloutGeneration(number=number, policy_step=policy_step, **rows)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
