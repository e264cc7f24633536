"""What every learner shares: config basics, input scaling, optimizers, target updates, TD losses, state dicts."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from mbrl_core.batch import Batch
from mbrl_core.errors import ConfigError
from mbrl_core.learner import LearnerContext
from policies.networks import ActionScaler, ObservationNormalizer


def _positive(value: float) -> bool:
    return value > 0


def _non_negative(value: float) -> bool:
    return value >= 0


# The values a hyperparameter may take, by name, in every learner that has it ("..._lr": any learning rate).
# Checked when a config is built, so `--set gamma=2` stops with the key's name instead of training on it.
HYPERPARAMETER_RANGES: dict[str, tuple[str, Callable[[float], bool]]] = {
    "_lr": ("> 0", _positive),
    "gamma": ("in [0, 1]", lambda value: 0 <= value <= 1),
    "tau": ("in (0, 1]", lambda value: 0 < value <= 1),
    "expectile": ("in (0, 1)", lambda value: 0 < value < 1),
    "critic_members": (">= 1", lambda value: value >= 1),
    "n_actions": (">= 1", lambda value: value >= 1),
    "policy_freq": (">= 1", lambda value: value >= 1),
    "init_alpha": ("> 0", _positive),
    "temperature": ("> 0", _positive),
    "awac_lambda": ("> 0", _positive),
    "max_weight": ("> 0", _positive),
    "beta": (">= 0", _non_negative),
    "alpha": (">= 0", _non_negative),
    "cql_alpha": (">= 0", _non_negative),
    "penalty": (">= 0", _non_negative),
    "halt_penalty": (">= 0", _non_negative),
    "policy_noise": (">= 0", _non_negative),
    "noise_clip": (">= 0", _non_negative),
    "bc_steps": (">= 0", _non_negative),
}


def _range_of(name: str) -> tuple[str, Callable[[float], bool]] | None:
    return HYPERPARAMETER_RANGES.get(name) or (HYPERPARAMETER_RANGES["_lr"] if name.endswith("_lr") else None)


@dataclass
class LearnerConfig:
    """What every learner's config has: the hidden widths of its networks (YAML lists become int tuples);
    every hyperparameter named in ``HYPERPARAMETER_RANGES`` is checked against its range."""

    hidden_sizes: tuple[int, ...] = (256, 256)

    def __post_init__(self) -> None:
        self.hidden_sizes = tuple(int(width) for width in self.hidden_sizes)
        if any(width < 1 for width in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be widths >= 1, not {list(self.hidden_sizes)}")
        for field in fields(self):
            value, limits = getattr(self, field.name), _range_of(field.name)
            is_number = isinstance(value, (int, float)) and not isinstance(value, bool)  # not cosine_actor_lr
            if limits is not None and is_number and not limits[1](value):
                raise ValueError(f"{field.name} must be {limits[0]}, not {value!r}")
        low, high = getattr(self, "log_std_min", None), getattr(self, "log_std_max", None)
        if low is not None and high is not None and not low < high:
            raise ValueError(f"log_std_min must be below log_std_max, not {low!r} >= {high!r}")


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


def td_loss(q_values: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Σ_e E[(Q_e(s,a) - y)²] over the critic ensemble: ``q_values [E, N]``, ``target [N]``.

    Computed in float32 even when the critic ran in bfloat16 (autocast): the
    squared error of two nearby values needs the mantissa bfloat16 lacks.
    """
    return (q_values.float() - target.float()).pow(2).mean(-1).sum()


def advantage_weights(advantages: torch.Tensor, inverse_temperature: float, max_weight: float) -> torch.Tensor:
    """AWR-style weights exp(β A), clipped at ``max_weight`` (IQL: β = 3, AWAC: β = 1/λ; both clip at 100)."""
    return torch.exp(inverse_temperature * advantages).clamp(max=max_weight)


def return_range_reward_scale(context: LearnerContext, learner: str) -> float:
    """1000 / (max - min episode return): the locomotion reward scaling of IQL's and CORL's code."""
    spread = context.episode_return_max - context.episode_return_min
    if spread <= 0:
        raise ConfigError(
            f"{learner}: scale_rewards_by_return_range needs episodes with different returns (min = max = "
            f"{context.episode_return_max}); set scale_rewards_by_return_range=false"
        )
    return 1000.0 / spread


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
        self.observation_normalizer = ObservationNormalizer(context.observation_normalizer, enabled=normalize)
        self.action_scaler = ActionScaler(context.action_low, context.action_high)
        self.nets = nn.ModuleDict(
            {"observation_normalizer": self.observation_normalizer, "action_scaler": self.action_scaler}
        )
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        self.updates = 0

    def step(self, losses: dict[str, torch.Tensor]) -> None:
        """One backward of the summed ``losses``, then a step of each optimizer they are named after.

        Each term must reach only its own optimizer's parameters (targets, sampled
        actions and weights are detached where a term must not move them), so one
        backward of the sum equals one backward per term; the contract test checks it.
        The backward and the steps run outside autocast: gradients and the Adam
        update stay in the float32 of the master weights.
        """
        optimizers = [self.optimizers[name] for name in losses]
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, enabled=False):
            torch.stack([loss.float() for loss in losses.values()]).sum().backward()
            for optimizer in optimizers:
                optimizer.step()

    def finish_setup(self) -> None:
        """Move everything to the training device (call once the networks are in ``self.nets``)."""
        self.nets.to(self.device)

    def inputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(normalized observations, unit-box actions, normalized next observations)."""
        normalize = self.observation_normalizer
        return (
            normalize(batch.observations),
            self.action_scaler.to_unit(batch.actions),
            normalize(batch.next_observations),
        )

    def act(self, observations: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Actions in env units for raw observations ``[N, obs_dim]`` (or one ``[obs_dim]``)."""
        observations = torch.as_tensor(observations, dtype=torch.float32, device=self.device)
        single = observations.dim() == 1
        with torch.no_grad():
            unit = self.policy_actions(
                self.observation_normalizer(observations.reshape(-1, self.context.obs_dim)), deterministic
            )
        actions = self.action_scaler.to_env(unit)
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
