"""Termination rules of the standard tasks, applied to predicted next observations.

Rules follow the gymnasium v5 MuJoCo sources (``is_healthy`` / ``step``), with
the env's default ranges unless the dataset's env spec passes other kwargs:
- Hopper-v5: healthy iff every obs[1:] in (-100, 100), z = obs[0] in (0.7, inf),
  torso angle obs[1] in (-0.2, 0.2) (strict bounds).
- Walker2d-v5: z = obs[0] in (0.8, 2.0), angle obs[1] in (-1, 1) (strict).
- Ant-v5: finite state and z = obs[0] in [0.2, 1.0] (closed bounds).
- Humanoid-v5: z = obs[0] in (1.0, 2.0) (strict).
- InvertedPendulum-v5: terminates when the obs is not finite or |obs[1]| > 0.2.
- HalfCheetah, Swimmer, Reacher, Pusher (v5) and Pendulum never terminate.
With ``exclude_current_positions_from_observation=False`` the x (and for
Ant/Humanoid y) position is in the observation, so the indices shift by 1 (2).
An env not listed gets a learned terminal head (when the data has terminals)
or "never terminates", with a warning that says which.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

NEVER, LEARNED = "never", "learned"
NEVER_TERMINATING_ENVS = ("HalfCheetah", "Swimmer", "Reacher", "Pusher", "Pendulum")

# the v5 constructor defaults of each env with a healthy-state rule
HEALTHY_DEFAULTS: dict[str, dict[str, Any]] = {
    "Hopper": {
        "healthy_state_range": (-100.0, 100.0),
        "healthy_z_range": (0.7, math.inf),
        "healthy_angle_range": (-0.2, 0.2),
    },
    "Walker2d": {"healthy_z_range": (0.8, 2.0), "healthy_angle_range": (-1.0, 1.0)},
    "Ant": {"healthy_z_range": (0.2, 1.0)},
    "Humanoid": {"healthy_z_range": (1.0, 2.0)},
    "InvertedPendulum": {},
}
# observation entries skipped before z when positions are included (x for planar bodies, x and y for Ant/Humanoid)
POSITION_DIMS = {"Hopper": 1, "Walker2d": 1, "Ant": 2, "Humanoid": 2, "InvertedPendulum": 0}


@dataclass(frozen=True)
class TerminationRule:
    """A serializable termination rule: ``kind`` is an env name, ``never`` or ``learned``."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "params": {k: list(v) if isinstance(v, tuple) else v for k, v in self.params.items()},
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TerminationRule:
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in values.get("params", {}).items()}
        return cls(values["kind"], params)

    @property
    def is_learned(self) -> bool:
        return self.kind == LEARNED

    def describe(self) -> str:
        if self.kind in (NEVER, LEARNED):
            return {NEVER: "never terminates", LEARNED: "learned terminal head"}[self.kind]
        return f"{self.kind}-v5 healthy-state rule"

    def __call__(self, next_observations: torch.Tensor) -> torch.Tensor:
        """1.0 where the predicted next observation is terminal, else 0.0 (``learned`` is applied by the model)."""
        if self.kind in (NEVER, LEARNED):
            return torch.zeros(next_observations.shape[0], device=next_observations.device)
        return (~_HEALTHY[self.kind](next_observations, self.params)).float()


def _inside(values: torch.Tensor, bounds: tuple[float, float], closed: bool = False) -> torch.Tensor:
    low, high = bounds
    if closed:
        return (values >= low) & (values <= high)
    return (values > low) & (values < high)


def _hopper_healthy(obs: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
    i = p["offset"]
    state_ok = _inside(obs[:, i + 1 :], p["healthy_state_range"]).all(dim=1)
    return state_ok & _inside(obs[:, i], p["healthy_z_range"]) & _inside(obs[:, i + 1], p["healthy_angle_range"])


def _walker2d_healthy(obs: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
    i = p["offset"]
    return _inside(obs[:, i], p["healthy_z_range"]) & _inside(obs[:, i + 1], p["healthy_angle_range"])


def _ant_healthy(obs: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
    return torch.isfinite(obs).all(dim=1) & _inside(obs[:, p["offset"]], p["healthy_z_range"], closed=True)


def _humanoid_healthy(obs: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
    return _inside(obs[:, p["offset"]], p["healthy_z_range"])


def _inverted_pendulum_healthy(obs: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
    return torch.isfinite(obs).all(dim=1) & (obs[:, 1].abs() <= 0.2)


_HEALTHY = {
    "Hopper": _hopper_healthy,
    "Walker2d": _walker2d_healthy,
    "Ant": _ant_healthy,
    "Humanoid": _humanoid_healthy,
    "InvertedPendulum": _inverted_pendulum_healthy,
}


def env_name(env_id: str | None) -> str | None:
    """``"Hopper-v5"`` -> ``"Hopper"``; also strips a ``namespace/`` prefix."""
    if not env_id:
        return None
    return env_id.rsplit("/", 1)[-1].split("-v")[0]


def env_kwargs(env_spec_json: str | None) -> dict[str, Any]:
    if not env_spec_json:
        return {}
    try:
        return dict(json.loads(env_spec_json).get("kwargs") or {})
    except (ValueError, AttributeError):
        return {}


def rule_for_env(env_id: str | None, env_spec_json: str | None = None) -> TerminationRule | None:
    """The known rule of an env (its spec kwargs override the v5 defaults), or None if unknown."""
    name = env_name(env_id)
    if name in NEVER_TERMINATING_ENVS:
        return TerminationRule(NEVER)
    if name not in HEALTHY_DEFAULTS:
        return None
    kwargs = env_kwargs(env_spec_json)
    if kwargs.get("terminate_when_unhealthy", True) is False:
        return TerminationRule(NEVER)
    params: dict[str, Any] = {key: tuple(kwargs.get(key, default)) for key, default in HEALTHY_DEFAULTS[name].items()}
    positions_included = kwargs.get("exclude_current_positions_from_observation", True) is False
    params["offset"] = POSITION_DIMS[name] if positions_included else 0
    return TerminationRule(name, params)


def choose_termination(
    mode: str, env_id: str | None, env_spec_json: str | None, has_terminals: bool
) -> TerminationRule:
    """Resolve the config's ``termination`` mode (auto | never | learned) for a dataset."""
    if mode == NEVER:
        return TerminationRule(NEVER)
    if mode == LEARNED:
        return TerminationRule(LEARNED)
    known = rule_for_env(env_id, env_spec_json)
    if known is not None:
        return known
    if has_terminals:
        warnings.warn(
            f"no termination rule for env '{env_id}': learning a terminal head from the dataset's terminal flags",
            stacklevel=2,
        )
        return TerminationRule(LEARNED)
    warnings.warn(
        f"no termination rule for env '{env_id}' and no terminals in the dataset: the model never terminates",
        stacklevel=2,
    )
    return TerminationRule(NEVER)
