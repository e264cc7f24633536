"""Each learner's defaults are the papers' / CORL's values, and configs/<algo>.yaml says the same."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from mbrl_core.batch import Batch
from mbrl_core.config import configs_dir, read_yaml, resolve_algo_config
from mbrl_core.errors import ConfigError
from mbrl_core.learner import LearnerContext
from mbrl_core.normalization import Normalizer
from policies.registry import LEARNERS, get_learner

MODEL_FREE = ["bc", "td3bc", "iql", "awac", "cql", "sac"]
MODEL_BASED = ["mopo", "morel", "combo"]
# OfflineRL-Kit run_example/run_mopo.py and run_combo.py: the optimizer their per-dataset values were tuned with.
OFFLINERL_KIT_SAC = {
    "actor_lr": 1e-4,
    "critic_lr": 3e-4,
    "alpha_lr": 1e-4,
    "cosine_actor_lr": True,
    "target_entropy": None,
    "gamma": 0.99,
    "tau": 0.005,
    "normalize_observations": False,
}

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
        "log_std_min": -5.0,  # learner.py passes -5 (policy.py's LOG_STD_MIN -10 goes unused)
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
    "mopo": {**OFFLINERL_KIT_SAC, "hidden_sizes": (256, 256), "backup_entropy": True, "penalty": 1.0},
    # MOReL: MOPO's SAC core (fair comparison); mjrl v2 d4rl_hopper_medium.txt pessimism_coef 3.0, truncate_reward 0.0.
    "morel": {**OFFLINERL_KIT_SAC, "hidden_sizes": (256, 256), "pessimism_coef": 3.0, "halt_penalty": 0.0},
    "combo": {
        **OFFLINERL_KIT_SAC,
        "hidden_sizes": (256, 256, 256),
        "backup_entropy": False,
        "orthogonal_init": False,
        "cql_alpha": 5.0,
        "n_actions": 10,
        "temperature": 1.0,
        "lagrange_threshold": None,
    },
}
# Inherited keys a learner does not use, left out of its YAML.
UNUSED_KEYS = {"combo": {"log_std_offset"}}


@pytest.mark.parametrize("name", MODEL_FREE + MODEL_BASED)
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


@pytest.mark.parametrize("name", MODEL_FREE + MODEL_BASED)
def test_yaml_learner_section_equals_dataclass_defaults(name):
    yaml_values = read_yaml(configs_dir() / f"{name}.yaml")["learner"]
    defaults = dataclasses.asdict(get_learner(name).config_cls())
    for key in UNUSED_KEYS.get(name, ()):
        defaults.pop(key)
    normalized = {key: tuple(value) if isinstance(value, list) else value for key, value in yaml_values.items()}
    assert normalized == defaults


def test_iql_hopper_medium_expert_values_from_corl():
    resolved = resolve_algo_config("iql", "mujoco/hopper/medium-expert-v0")["learner"]
    assert resolved["beta"] == 6.0 and resolved["expectile"] == 0.5
    other = resolve_algo_config("iql", "mujoco/hopper/medium-v0")["learner"]
    assert other["beta"] == 3.0 and other["expectile"] == 0.7


def test_registry_names_and_unknown_name():
    assert set(MODEL_FREE) <= set(LEARNERS)
    assert all(not LEARNERS[name].model_based for name in MODEL_FREE)
    with pytest.raises(ConfigError, match="known: .*iql"):
        get_learner("iqll")


def test_combo_actor_is_offlinerl_kits_and_the_actor_lr_decays():
    from policies.combo import COMBO, COMBOConfig

    context = LearnerContext(
        obs_dim=3,
        act_dim=2,
        action_low=-torch.ones(2),
        action_high=torch.ones(2),
        observation_normalizer=Normalizer(torch.full((3,), 5.0), torch.full((3,), 2.0)),
        total_steps=10,
        device=torch.device("cpu"),
    )
    learner = COMBO(COMBOConfig(hidden_sizes=(8, 8)), context)
    # Raw observations: the dataset's statistics are not applied (OfflineRL-Kit normalizes only for TD3+BC and RAMBO).
    observations = torch.tensor([[1.0, 2.0, 3.0]])
    assert torch.equal(learner.nets["observation_normalizer"](observations), observations)
    # dist_module.py TanhDiagGaussian: log-std hard-clamped to [-5, 2] whatever the input.
    policy = learner.nets["actor"](torch.tensor([[1e4, -1e4, 1e4], [-1e4, 1e4, -1e4]]))
    assert policy.log_std.min() >= -5.0 and policy.log_std.max() <= 2.0
    assert {-5.0, 2.0} & set(policy.log_std.flatten().tolist())
    # Cosine schedule on the actor only: after the whole run the actor lr has decayed to 0, the critic's has not.
    batch = Batch(
        observations=torch.randn(8, 3),
        actions=torch.rand(8, 2) * 2 - 1,
        rewards=torch.randn(8),
        next_observations=torch.randn(8, 3),
        terminals=torch.zeros(8),
        synthetic=torch.tensor([False] * 4 + [True] * 4),
    )
    for _ in range(10):
        metrics = learner.update(batch)
    assert learner.optimizers["actor"].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert learner.optimizers["critic"].param_groups[0]["lr"] == pytest.approx(3e-4)
    assert float(metrics["model_reward_mean"]) == pytest.approx(float(batch.rewards[4:].mean()))


def test_cql_scales_rewards_on_hopper_medium_only_as_corl_does():
    assert resolve_algo_config("cql", "hopper/medium-v0")["learner"]["scale_rewards_by_return_range"] is True
    for other in ("hopper/medium-replay-v0", "halfcheetah/medium-v0"):
        assert resolve_algo_config("cql", other)["learner"]["scale_rewards_by_return_range"] is False


def test_morel_rollouts_are_long_enough_to_reach_a_fall_with_mopos_rows_per_generation():
    # configs/morel.yaml: 25-step branches (5-step ones let MOReL stand still on hopper-medium: the fall takes ~20
    # steps, so the critic never saw it), from a fifth of MOPO's starts, so a generation has as many rows.
    morel = resolve_algo_config("morel", "hopper/medium-v0")["rollouts"]
    mopo = resolve_algo_config("mopo", "hopper/medium-v0")["rollouts"]
    assert morel["horizon"] == 25 and morel["batch_size"] == 10_000
    assert morel["horizon"] * morel["batch_size"] == mopo["horizon"] * mopo["batch_size"]
