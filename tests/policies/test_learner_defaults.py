"""Each learner's defaults are the papers' / CORL's values, and configs/<algo>.yaml says the same."""

from __future__ import annotations

import dataclasses
import math

import pytest

from mbrl_core.config import configs_dir, read_yaml, resolve_algo_config
from mbrl_core.errors import ConfigError
from policies.registry import LEARNERS, get_learner

MODEL_FREE = ["bc", "td3bc", "iql", "awac", "cql", "sac"]

PINNED = {
    "bc": {"hidden_sizes": (256, 256), "actor_lr": 3e-4, "normalize_observations": True},
    "td3bc": {
        "hidden_sizes": (256, 256),
        "actor_lr": 3e-4,
        "critic_lr": 3e-4,
        "gamma": 0.99,
        "tau": 0.005,
        "alpha": 2.5,
        "policy_noise": 0.2,
        "noise_clip": 0.5,
        "policy_freq": 2,
        "normalize_observations": True,
    },
    "iql": {
        "hidden_sizes": (256, 256),
        "actor_lr": 3e-4,
        "critic_lr": 3e-4,
        "value_lr": 3e-4,
        "gamma": 0.99,
        "tau": 0.005,
        "expectile": 0.7,
        "beta": 3.0,
        "max_weight": 100.0,
        "cosine_actor_lr": True,
        "scale_rewards_by_return_range": True,
        "log_std_min": -5.0,
        "log_std_max": 2.0,
    },
    "awac": {
        "hidden_sizes": (256, 256, 256),
        "actor_lr": 3e-4,
        "critic_lr": 3e-4,
        "gamma": 0.99,
        "tau": 0.005,
        "awac_lambda": 1.0 / 3.0,
        "max_weight": 100.0,
    },
    "cql": {
        "hidden_sizes": (256, 256, 256),
        "critic_members": 2,
        "actor_lr": 3e-5,
        "critic_lr": 3e-4,
        "gamma": 0.99,
        "tau": 0.005,
        "cql_alpha": 10.0,
        "n_actions": 10,
        "temperature": 1.0,
        "lagrange_threshold": None,
        "backup_entropy": False,
        "auto_entropy": True,
        "target_entropy": None,
        "bc_steps": 0,
        "orthogonal_init": True,
    },
    "sac": {
        "hidden_sizes": (256, 256),
        "critic_members": 2,
        "actor_lr": 3e-4,
        "critic_lr": 3e-4,
        "alpha_lr": 3e-4,
        "gamma": 0.99,
        "tau": 0.005,
        "auto_entropy": True,
        "target_entropy": None,
        "init_alpha": 1.0,
    },
}


@pytest.mark.parametrize("name", MODEL_FREE)
def test_dataclass_defaults_are_the_published_values(name):
    config = get_learner(name).config_cls()
    for key, value in PINNED[name].items():
        actual = getattr(config, key)
        if isinstance(value, float):
            assert math.isclose(actual, value, rel_tol=1e-9), f"{name}.{key} = {actual}, expected {value}"
        else:
            assert actual == value, f"{name}.{key} = {actual}, expected {value}"


def test_iql_expectile_is_not_the_library_trap():
    assert get_learner("iql").config_cls().expectile == 0.7


@pytest.mark.parametrize("name", MODEL_FREE)
def test_yaml_learner_section_equals_dataclass_defaults(name):
    yaml_values = read_yaml(configs_dir() / f"{name}.yaml")["learner"]
    defaults = dataclasses.asdict(get_learner(name).config_cls())
    normalized = {key: tuple(value) if isinstance(value, list) else value for key, value in yaml_values.items()}
    assert normalized == defaults


def test_iql_hopper_medium_expert_override_from_corl():
    resolved = resolve_algo_config("iql", "mujoco/hopper/medium-expert-v0")["learner"]
    assert resolved["beta"] == 6.0 and resolved["expectile"] == 0.5
    other = resolve_algo_config("iql", "mujoco/hopper/medium-v0")["learner"]
    assert other["beta"] == 3.0 and other["expectile"] == 0.7


def test_registry_names_and_unknown_name():
    assert set(MODEL_FREE) <= set(LEARNERS)
    assert all(not LEARNERS[name].model_based for name in MODEL_FREE)
    with pytest.raises(ConfigError, match="known: .*iql"):
        get_learner("iqll")
