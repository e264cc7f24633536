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

Every random draw of a generation (start states, elite choices, model noise and
the policy's action noise) comes from the generator's own ``torch.Generator``:
the policy's draws are routed there by :class:`DrawsFrom`, so a generation is a
function of the policy's weights and that generator's state alone. That is what
lets the mixed sampler run a generation on a background thread while the learner
keeps drawing from the global RNG, and still reproduce it exactly on resume.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

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
    # Generate the next generation on a background thread under a snapshot of the policy, so rollouts
    # overlap the updates; the rollout policy then lags one refresh period (see mbrl_core.sampler).
    background: bool = True


@dataclass(frozen=True)
class Halting:
    """MOReL's unknown-state detector: halt a rollout where ``uncertainty[feature] > threshold``."""

    feature: str
    threshold: float

    def unknown(self, uncertainty: dict[str, torch.Tensor]) -> torch.Tensor:
        return uncertainty[self.feature] > self.threshold


Act = Callable[[torch.Tensor], torch.Tensor]

# Random functions that take a ``generator`` keyword, and the ``*_like`` ones rebuilt with one.
_TAKES_GENERATOR = {
    torch.randn,
    torch.rand,
    torch.randint,
    torch.randperm,
    torch.normal,
    torch.multinomial,
    torch.bernoulli,
    torch.poisson,
    torch.Tensor.normal_,
    torch.Tensor.uniform_,
    torch.Tensor.bernoulli_,
    torch.Tensor.exponential_,
    torch.Tensor.random_,
    torch.Tensor.multinomial,
}
_LIKE = {torch.randn_like: torch.randn, torch.rand_like: torch.rand}


class DrawsFrom(TorchFunctionMode):
    """Inside ``with DrawsFrom(generator):`` the random functions above draw from ``generator``.

    A torch function mode is thread-local, so this leaves other threads' draws from
    the global RNG alone; that is why a policy's ``act`` (which samples its action
    noise from the global RNG) can run on a rollout thread without making the
    learner's updates on the main thread irreproducible.
    """

    def __init__(self, generator: torch.Generator) -> None:
        super().__init__()
        self.generator = generator

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = dict(kwargs or {})
        if func in _LIKE and kwargs.get("generator") is None:
            like = args[0]
            return _LIKE[func](
                like.shape,
                generator=self.generator,
                dtype=kwargs.get("dtype") or like.dtype,
                device=kwargs.get("device") or like.device,
            )
        if func in _TAKES_GENERATOR and kwargs.get("generator") is None:
            kwargs["generator"] = self.generator
        return func(*args, **kwargs)


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

        with DrawsFrom(self.generator):
            rows = branched_rollouts(
                self.model, act, self.start_observations[picks], self.horizon, self.generator, self.halting
            )
        return RolloutGeneration(number=number, policy_step=policy_step, **rows)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
