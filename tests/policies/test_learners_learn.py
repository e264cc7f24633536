"""Learners learn: BC, TD3-BC and IQL beat a random policy on the small InvertedPendulum dataset.

Random actions return ~5 on InvertedPendulum-v5, the dataset's episodes ~277 on
average, the expert 1000. A tiny local evaluation keeps this file independent
of the trainer.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from mbrl_core.learner import LearnerContext
from mbrl_core.sampler import RealSampler
from policies.registry import get_learner

UPDATES = {"bc": 500, "td3bc": 500, "iql": 500}  # all three reach ~1000 by 250 updates here
RANDOM_RETURN = 5.0


def evaluate(learner, episodes: int = 3, seed: int = 123) -> float:
    env = gym.make("InvertedPendulum-v5")
    returns = []
    for episode in range(episodes):
        observation, _ = env.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            action = learner.act(torch.as_tensor(observation, dtype=torch.float32), deterministic=True)
            observation, reward, terminated, truncated, _ = env.step(action.numpy())
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns))


def train(name: str, data, updates: int, **overrides):
    torch.manual_seed(0)
    entry = get_learner(name)
    learner = entry.learner_cls(
        entry.config_cls(**overrides), LearnerContext.from_data(data, updates, torch.device("cpu"))
    )
    sampler = RealSampler(data, batch_size=256, seed=0)
    metrics = {}
    for _ in range(updates):
        metrics = learner.update(sampler.sample())
    return learner, metrics, sampler


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bc", "td3bc", "iql"])
def test_learner_beats_random_policy(small_data, name):
    learner, metrics, _ = train(name, small_data, UPDATES[name])
    assert all(torch.isfinite(value) for value in metrics.values())
    score = evaluate(learner)
    assert score > 20 * RANDOM_RETURN, f"{name} returned {score:.1f} after {UPDATES[name]} updates"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["awac", "cql", "sac"])
def test_learner_updates_and_state_dict_round_trips(small_data, name):
    learner, metrics, sampler = train(name, small_data, 5)
    assert all(torch.isfinite(value) for value in metrics.values()), metrics
    observations = small_data.observations[:16]
    clone = train(name, small_data, 0)[0]
    clone.load_state_dict(learner.state_dict())
    assert torch.equal(clone.act(observations), learner.act(observations))
    # Optimizer state and counters came along: the next update is identical too.
    batch = sampler.sample()
    torch.manual_seed(1)
    after = learner.update(batch)
    torch.manual_seed(1)
    clone_after = clone.update(batch)
    assert all(torch.equal(after[key], clone_after[key]) for key in after)
    assert torch.equal(clone.act(observations), learner.act(observations))
