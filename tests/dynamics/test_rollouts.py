"""Branched rollouts: terminals stop them, horizon/batch hold, starts come from the dataset, MOReL halts,
and the penalty applied at sampling equals the one computed at generation."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from dynamics.rollouts import Halting, RolloutGenerator, branched_rollouts
from mbrl_core.contracts import UNCERTAINTY_FEATURES
from mbrl_core.learner import LearnerContext
from mbrl_core.model_buffer import ModelBuffer
from mbrl_core.rollout_store import RolloutStore
from mbrl_core.sampler import MixedSampler, RealSampler
from policies.mopo import MOPO, MOPOConfig


@dataclass
class FakeStep:
    next_observations: torch.Tensor
    rewards: torch.Tensor
    terminals: torch.Tensor
    uncertainty: dict


class CountingModel:
    """s' = s + 1 in the first dimension; terminal when it reaches 3; uncertainty = s'[0] (for halting tests)."""

    def step(self, observations, actions, generator):
        next_observations = observations.clone()
        next_observations[:, 0] += 1
        return FakeStep(
            next_observations,
            rewards=observations[:, 0] + actions[:, 0],
            terminals=(next_observations[:, 0] >= 3).float(),
            uncertainty={"max_pairwise_disagreement": next_observations[:, 0].clone()},
        )


def zero_policy(observations):
    return torch.zeros(observations.shape[0], 1)


def test_rollouts_stop_at_terminals_and_respect_the_horizon():
    starts = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [-5.0, 0.0]])
    rows = branched_rollouts(CountingModel(), zero_policy, starts, horizon=4, generator=torch.Generator())
    lengths = torch.bincount(rows["rollout_ids"]).tolist()
    # start 0 -> terminal at step 2 (3 rows); 1 -> 2 rows; 2 -> 1 row; -5 never terminates -> horizon 4.
    assert lengths == [3, 2, 1, 4]
    for rollout in range(4):
        mine = rows["rollout_ids"] == rollout
        terminals = rows["terminals"][mine]
        assert terminals[:-1].eq(0).all()  # nothing follows a terminal row
        assert torch.equal(rows["step_indices"][mine], torch.arange(int(mine.sum())))
        # Each row starts where the previous one ended.
        assert torch.equal(rows["observations"][mine][1:], rows["next_observations"][mine][:-1])


def test_halting_stops_at_the_first_unknown_row_and_keeps_it():
    starts = torch.tensor([[-5.0, 0.0], [-1.5, 0.0]])
    halting = Halting("max_pairwise_disagreement", threshold=-2.5)  # unknown once s' > -2.5
    rows = branched_rollouts(
        CountingModel(), zero_policy, starts, horizon=5, generator=torch.Generator(), halting=halting
    )
    first = rows["rollout_ids"] == 0
    # -5 -> -4 -> -3 -> -2 (unknown: kept, then halted).
    assert rows["next_observations"][first][:, 0].tolist() == [-4.0, -3.0, -2.0]
    assert (rows["rollout_ids"] == 1).sum() == 1  # -1.5 -> -0.5 is unknown at once


def test_generator_uses_dataset_start_states_batch_and_horizon(small_data, tiny_model):
    context = LearnerContext.from_data(small_data, total_steps=1000, device=torch.device("cpu"))
    learner = MOPO(MOPOConfig(hidden_sizes=(32, 32)), context)
    generator = RolloutGenerator(tiny_model, small_data.observations, horizon=6, batch_size=300, seed=0)
    generation = generator.generate(learner, number=4, policy_step=1000)
    assert generation.number == 4 and generation.policy_step == 1000
    assert generation.step_indices.max() < 6 and len(generation) <= 300 * 6
    starts = generation.observations[generation.step_indices == 0]
    assert len(starts) == 300 and torch.equal(torch.unique(generation.rollout_ids), torch.arange(300))
    matches = (starts[:, None, :] == small_data.observations[None, :, :]).all(-1).any(1)
    assert matches.all()
    # The model's termination rule (InvertedPendulum: |angle| > 0.2) ends rollouts, and nothing follows a terminal.
    assert torch.equal(generation.terminals, (generation.next_observations[:, 1].abs() > 0.2).float())
    for rollout in generation.rollout_ids[generation.terminals > 0].tolist():
        mine = generation.rollout_ids == rollout
        assert generation.terminals[mine][-1] == 1 and generation.terminals[mine][:-1].eq(0).all()
    assert set(generation.uncertainty) == {"max_std_norm", "max_pairwise_disagreement", "ensemble_std"}


class RecordingModel:
    """Wraps the dynamics model and computes MOPO's penalized reward at generation time, per (s, a)."""

    def __init__(self, model, penalty: float) -> None:
        self.model, self.penalty, self.penalized = model, penalty, {}

    def step(self, observations, actions, generator):
        outcome = self.model.step(observations, actions, generator)
        penalized = outcome.rewards - self.penalty * outcome.uncertainty["max_std_norm"]
        for obs, act, value in zip(observations.tolist(), actions.tolist(), penalized.tolist()):
            self.penalized[tuple(obs + act)] = value
        return outcome


def test_penalty_at_sampling_equals_penalty_at_generation(small_data, tiny_model, tmp_path):
    penalty = 2.5
    context = LearnerContext.from_data(small_data, total_steps=1000, device=torch.device("cpu"))
    learner = MOPO(MOPOConfig(hidden_sizes=(32, 32), penalty=penalty), context)
    recorder = RecordingModel(tiny_model, penalty)

    def make(store):
        return MixedSampler(
            RealSampler(small_data, batch_size=256),
            ModelBuffer(capacity=2000, device="cpu"),
            RolloutGenerator(recorder, small_data.observations, horizon=3, batch_size=200, seed=1),
            batch_size=256,
            real_fraction=0.25,
            refresh_every=100,
            store=store,
        )

    url = tmp_path / "r.zarr"
    first = make(
        RolloutStore.create(
            url,
            obs_dim=small_data.obs_dim,
            act_dim=small_data.act_dim,
            uncertainty_names=list(UNCERTAINTY_FEATURES),
            metadata={},
        )
    )
    first.prepare(0, learner)
    checkpoint = first.state_dict()
    first.close()
    # A second sampler rebuilds its buffer from the Zarr store: the rows learners see went through disk.
    second = make(RolloutStore.open(url, mode="a"))
    second.load_state_dict(checkpoint)
    batch = second.sample()
    transformed = learner.transform_batch(batch)
    synthetic = batch.synthetic
    assert synthetic.sum() == 192
    for obs, act, reward in zip(
        batch.observations[synthetic], batch.actions[synthetic], transformed.rewards[synthetic]
    ):
        assert reward.item() == pytest.approx(recorder.penalized[tuple(obs.tolist() + act.tolist())], abs=1e-6)
    # Real rows keep their reward.
    assert torch.equal(transformed.rewards[~synthetic], batch.rewards[~synthetic])
    second.close()
