"""The environment a collection acts in, and the behaviours that act in it (as numpy callables)."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

from mbrl_core.errors import ConfigError
from mbrl_core.evaluation import quiet_mujoco_notices
from policies.sac import SAC

Policy = Callable[[np.ndarray], np.ndarray]


def make_env(env_id: str) -> gym.Env:
    """The environment, refused in one line unless its spaces are Box and its episodes have a time limit."""
    quiet_mujoco_notices()
    try:
        env = gym.make(env_id)
    except gym.error.Error as error:
        raise ConfigError(f"cannot create environment '{env_id}': {error}") from error
    for what, space in (("observation", env.observation_space), ("action", env.action_space)):
        if not isinstance(space, gym.spaces.Box):
            raise ConfigError(
                f"environment '{env_id}': {what} space {type(space).__name__} is not supported (only "
                "continuous Box spaces are)"
            )
    if env.spec is None or env.spec.max_episode_steps is None:
        raise ConfigError(
            f"environment '{env_id}' has no time limit; register it with max_episode_steps so episodes end"
        )
    return env


def box(space: gym.Space) -> gym.spaces.Box:
    """A space :func:`make_env` has checked, typed as what it is."""
    assert isinstance(space, gym.spaces.Box), space
    return space


def run_episode(env: gym.Env, policy: Policy, seed: int, max_steps: int) -> dict[str, np.ndarray]:
    """One episode (at most ``max_steps``; a cut episode ends truncated, like D4RL's timeouts)."""
    observation, _ = env.reset(seed=seed)
    observations, actions, rewards, terminations, truncations = [as_float32(observation)], [], [], [], []
    for number in range(max_steps):
        action = policy(observations[-1])
        observation, reward, terminated, truncated, _ = env.step(action)
        observations.append(as_float32(observation))
        actions.append(action)
        rewards.append(float(reward))
        terminations.append(bool(terminated))
        truncations.append(bool(truncated) or (number == max_steps - 1 and not terminated))
        if terminations[-1] or truncations[-1]:
            break
    return {
        "observations": np.array(observations),
        "actions": np.array(actions, dtype=np.float32),
        "rewards": np.array(rewards),
        "terminations": np.array(terminations),
        "truncations": np.array(truncations),
    }


def as_float32(observation: np.ndarray) -> np.ndarray:
    return np.asarray(observation, dtype=np.float32)


def uniform_policy(space: gym.spaces.Box, rng: np.random.Generator) -> Policy:
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    return lambda observation: rng.uniform(low, high).astype(np.float32)


def learner_policy(learner: SAC, space: gym.spaces.Box) -> Policy:
    """Stochastic actions of a SAC learner for one numpy observation (D4RL sampled its behaviour policies)."""
    return lambda observation: np.clip(
        learner.act(torch.as_tensor(observation), deterministic=False).cpu().numpy(), space.low, space.high
    )
