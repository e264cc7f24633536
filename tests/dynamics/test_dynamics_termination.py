"""Termination rules: hand cases, agreement with the gymnasium v5 envs, env-spec kwargs, the unknown-env fallback."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from dynamics.termination import TerminationRule, choose_termination, rule_for_env


def terminal(env_id: str, *observations, spec_kwargs=None) -> list[float]:
    spec = json.dumps({"id": env_id, "kwargs": spec_kwargs}) if spec_kwargs else None
    return rule_for_env(env_id, spec)(torch.tensor(observations, dtype=torch.float32)).tolist()


def test_hopper_hand_cases():
    healthy = [1.25, 0.0] + [0.0] * 9
    assert terminal("Hopper-v5", healthy) == [0.0]
    assert terminal("Hopper-v5", [0.69] + healthy[1:], [1.25, 0.21] + healthy[2:], [1.25, -0.21] + healthy[2:]) == [
        1.0,
        1.0,
        1.0,
    ]
    assert terminal("Hopper-v5", healthy[:10] + [100.5], healthy[:10] + [99.0]) == [1.0, 0.0]


def test_walker2d_ant_pendulum_hand_cases():
    assert terminal(
        "Walker2d-v5",
        [1.2, 0.5] + [0.0] * 15,
        [0.79, 0.0] + [0.0] * 15,
        [2.01, 0.0] + [0.0] * 15,
        [1.2, -1.01] + [0.0] * 15,
    ) == [0, 1, 1, 1]
    ant = [0.0] * 105
    assert terminal(
        "Ant-v5", [0.2] + ant[1:], [1.0] + ant[1:], [0.19] + ant[1:], [1.01] + ant[1:], [0.5, math.nan] + ant[2:]
    ) == [0, 0, 1, 1, 1]
    assert terminal("InvertedPendulum-v5", [0.0, 0.2, 0.0, 0.0], [0.0, -0.21, 0.0, 0.0], [math.inf, 0.0, 0.0, 0.0]) == [
        0,
        1,
        1,
    ]
    assert terminal("Humanoid-v5", [1.4] + [0.0] * 347, [0.99] + [0.0] * 347) == [0, 1]


@pytest.mark.parametrize("env_id", ["HalfCheetah-v5", "Swimmer-v5", "Pendulum-v1", "Reacher-v5"])
def test_envs_that_never_terminate(env_id):
    rule = rule_for_env(env_id)
    assert rule.kind == "never" and rule(torch.full((3, 17), 1e6)).tolist() == [0, 0, 0]


def test_env_spec_kwargs_override_the_defaults():
    assert terminal("Hopper-v5", [0.6, 0.0] + [0.0] * 9, spec_kwargs={"healthy_z_range": [0.5, 2.0]}) == [0.0]
    assert rule_for_env("Hopper-v5", json.dumps({"kwargs": {"terminate_when_unhealthy": False}})).kind == "never"
    # with the x position in the observation, z and the angle move one place right
    assert terminal(
        "Walker2d-v5",
        [50.0, 1.2, 0.5] + [0.0] * 15,
        [50.0, 0.5, 0.0] + [0.0] * 15,
        spec_kwargs={"exclude_current_positions_from_observation": False},
    ) == [0.0, 1.0]


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Walker2d-v5", "Ant-v5", "InvertedPendulum-v5"])
def test_rules_agree_with_the_real_envs(env_id):
    env = gym.make(env_id)
    rule = rule_for_env(env_id)
    rng = np.random.default_rng(0)
    observations, terminations = [], []
    env.reset(seed=0)
    for _ in range(400):
        observation, _, terminated, truncated, _ = env.step(rng.uniform(env.action_space.low, env.action_space.high))
        observations.append(observation)
        terminations.append(float(terminated))
        if terminated or truncated:
            env.reset()
    env.close()
    predicted = rule(torch.as_tensor(np.array(observations), dtype=torch.float32)).numpy()
    assert sum(terminations) > 0
    np.testing.assert_array_equal(predicted, np.array(terminations))


def test_unknown_env_learns_a_terminal_head_or_never_terminates_with_a_warning():
    with pytest.warns(UserWarning, match="no termination rule for env 'Mystery-v0': learning a terminal head"):
        assert choose_termination("auto", "Mystery-v0", None, has_terminals=True).kind == "learned"
    with pytest.warns(UserWarning, match="no terminals in the dataset: the model never terminates"):
        assert choose_termination("auto", None, None, has_terminals=False).kind == "never"
    assert choose_termination("never", "Hopper-v5", None, has_terminals=True).kind == "never"
    assert choose_termination("learned", "Hopper-v5", None, has_terminals=True).kind == "learned"


def test_rule_round_trips_through_json():
    rule = rule_for_env("Hopper-v5")
    restored = TerminationRule.from_dict(json.loads(json.dumps(rule.to_dict())))
    assert restored == rule
