"""What every learner shares: input scaling, optimizers, target updates, TD targets, state dicts."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from mbrl_core.batch import Batch
from mbrl_core.learner import LearnerContext
from policies.networks import ActionScaler, ObservationNormalizer


def adam(module: nn.Module | list[nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel (one call for all parameters) where this torch supports it."""
    params = list(module.parameters()) if isinstance(module, nn.Module) else list(module)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, foreach=True)


def with_target(name: str, module: nn.Module) -> dict[str, nn.Module]:
    """``{name: module, name_target: a frozen copy}``: a network and its Polyak-averaged target."""
    return {name: module, f"{name}_target": copy.deepcopy(module).requires_grad_(False)}


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging θ' <- (1 - τ) θ' + τ θ, all tensors in one foreach call."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


def td_target(rewards: torch.Tensor, terminals: torch.Tensor, next_values: torch.Tensor, gamma: float) -> torch.Tensor:
    """y = r + γ (1 - terminal) V(s'). Only terminations stop bootstrapping; a timeout row bootstraps."""
    return rewards + gamma * (1.0 - terminals) * next_values


def advantage_weights(advantages: torch.Tensor, inverse_temperature: float, max_weight: float) -> torch.Tensor:
    """AWR-style weights exp(β A), clipped at ``max_weight`` (IQL: β = 3, AWAC: β = 1/λ; both clip at 100)."""
    return torch.exp(inverse_temperature * advantages).clamp(max=max_weight)


def step(optimizers: list[torch.optim.Optimizer], loss: torch.Tensor) -> None:
    """One backward for a sum of losses whose gradients touch disjoint parameter sets, then every step."""
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for optimizer in optimizers:
        optimizer.step()


class LearnerBase:
    """Holds the task context, the input scalers and the saved state.

    Subclasses put every module (networks, targets, temperatures) in
    ``self.nets``, optimizers in ``self.optimizers`` and LR schedulers in
    ``self.schedulers``; ``state_dict`` then covers them all plus ``self.updates``.
    """

    def __init__(self, config: Any, context: LearnerContext) -> None:
        self.config = config
        self.context = context
        self.device = torch.device(context.device)
        normalize = getattr(config, "normalize_observations", True)
        self.nets = nn.ModuleDict(
            {
                "observation_normalizer": ObservationNormalizer(context.observation_normalizer, enabled=normalize),
                "action_scaler": ActionScaler(context.action_low, context.action_high),
            }
        )
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        self.updates = 0

    def finish_setup(self) -> None:
        """Move everything to the training device (call once the networks are in ``self.nets``)."""
        self.nets.to(self.device)

    def inputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(normalized observations, unit-box actions, normalized next observations)."""
        normalize = self.nets["observation_normalizer"]
        return (
            normalize(batch.observations),
            self.nets["action_scaler"].to_unit(batch.actions),
            normalize(batch.next_observations),
        )

    def act(self, observations: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Actions in env units for raw observations ``[N, obs_dim]`` (or one ``[obs_dim]``)."""
        observations = torch.as_tensor(observations, dtype=torch.float32, device=self.device)
        single = observations.dim() == 1
        with torch.no_grad():
            unit = self.policy_actions(
                self.nets["observation_normalizer"](observations.reshape(-1, self.context.obs_dim)), deterministic
            )
        actions = self.nets["action_scaler"].to_env(unit)
        return actions[0] if single else actions

    def policy_actions(self, observations: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """Unit-box actions for normalized observations (each learner's actor)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {
            "nets": self.nets.state_dict(),
            "optimizers": {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()},
            "schedulers": {name: scheduler.state_dict() for name, scheduler in self.schedulers.items()},
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.nets.load_state_dict(state["nets"])
        for name, optimizer in self.optimizers.items():
            # Optimizer.load_state_dict keeps tensors that already match device and dtype, so an
            # in-memory state would share Adam moments with its source: copy them.
            optimizer.load_state_dict(copy.deepcopy(state["optimizers"][name]))
        for name, scheduler in self.schedulers.items():
            scheduler.load_state_dict(state["schedulers"][name])
        self.updates = int(state["updates"])
