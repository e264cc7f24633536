"""Rollouts off the critical path: the next generation is built on a worker thread under a policy snapshot.

Checked with the real pieces (the tiny dynamics model, the rollout generator, a SAC learner, the trainer):
the same seed gives the same buffer and weights, a resume from a checkpoint taken while a generation is in
flight equals the uninterrupted run, and a failure on the worker is raised on the trainer's thread.
"""

from __future__ import annotations

import pytest
import torch

from dynamics.rollouts import RolloutGenerator
from mbrl_core.contracts import UNCERTAINTY_FEATURES
from mbrl_core.learner import LearnerContext
from mbrl_core.model_buffer import ModelBuffer
from mbrl_core.rollout_store import RolloutStore
from mbrl_core.sampler import MixedSampler, RealSampler
from mbrl_core.trainer import OfflineTrainer, TrainerConfig
from policies.sac import SAC, SACConfig

REFRESH, HORIZON, STARTS, STEPS = 20, 3, 64, 70


def make_learner(data) -> SAC:
    torch.manual_seed(0)
    return SAC(SACConfig(hidden_sizes=(32, 32)), LearnerContext.from_data(data, STEPS, torch.device("cpu")))


def make_sampler(data, model, store: RolloutStore, source=None) -> MixedSampler:
    return MixedSampler(
        RealSampler(data, batch_size=32, seed=0),
        ModelBuffer(capacity=4 * STARTS * HORIZON, device="cpu"),
        source or RolloutGenerator(model, data.observations, HORIZON, STARTS, seed=0),
        batch_size=32,
        real_fraction=0.5,
        refresh_every=REFRESH,
        seed=0,
        store=store,
        background=True,
    )


def new_store(url, data) -> RolloutStore:
    return RolloutStore.create(
        url, obs_dim=data.obs_dim, act_dim=data.act_dim, uncertainty_names=list(UNCERTAINTY_FEATURES), metadata={}
    )


def train(data, model, store, run_dir=None, until=None, resume=False):
    """A short SAC-on-rollouts run; returns (learner, sampler) after ``fit(until)``."""
    learner = make_learner(data)
    sampler = make_sampler(data, model, store)
    config = TrainerConfig(steps=STEPS, batch_size=32, log_every=STEPS, eval_every=10 * STEPS, checkpoint_every=30)
    trainer = OfflineTrainer(learner, sampler, config, run_dir=run_dir, progress=False)
    if resume:
        assert trainer.load_checkpoint()
    trainer.fit(until)
    return learner, sampler


def buffer_rows(sampler: MixedSampler) -> dict[str, torch.Tensor]:
    columns = {name: column.clone() for name, column in sampler.buffer.columns.items()}
    columns.update({f"u/{name}": column.clone() for name, column in sampler.buffer.uncertainty.items()})
    return columns


def assert_same(left: dict[str, torch.Tensor], right: dict[str, torch.Tensor]) -> None:
    assert left.keys() == right.keys()
    for name in left:
        assert torch.equal(left[name], right[name]), name


def weights(learner: SAC) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in learner.nets.state_dict().items()}


def test_same_seed_gives_the_same_buffer_and_weights(small_data, tiny_model, tmp_path):
    runs = []
    for name in ("a", "b"):
        learner, sampler = train(small_data, tiny_model, new_store(tmp_path / f"{name}.zarr", small_data))
        sampler.close()
        runs.append((weights(learner), buffer_rows(sampler), sampler.buffer.layout()))
    assert_same(runs[0][0], runs[1][0])
    assert_same(runs[0][1], runs[1][1])
    assert runs[0][2] == runs[1][2]
    # Generation k (k >= 1) was built under the policy of the refresh before it: one period of lag.
    stored = RolloutStore.open(tmp_path / "a.zarr").generations
    assert [g["number"] for g in stored] == [0, 1, 2, 3]
    assert [g["policy_step"] for g in stored] == [0, 0, REFRESH, 2 * REFRESH]


def test_resume_with_a_generation_in_flight_equals_the_straight_run(small_data, tiny_model, tmp_path):
    straight, straight_sampler = train(small_data, tiny_model, new_store(tmp_path / "straight.zarr", small_data))
    straight_sampler.close()

    run_dir = tmp_path / "run"
    # The checkpoint at update 30 falls between refreshes 20 and 40: generation 2 is in flight.
    _, first = train(small_data, tiny_model, new_store(run_dir / "rollouts.zarr", small_data), run_dir, until=35)
    first.close()
    resumed, resumed_sampler = train(
        small_data, tiny_model, RolloutStore.open(run_dir / "rollouts.zarr", mode="a"), run_dir, resume=True
    )
    resumed_sampler.close()
    assert_same(weights(straight), weights(resumed))
    assert_same(buffer_rows(straight_sampler), buffer_rows(resumed_sampler))
    assert straight_sampler.buffer.layout() == resumed_sampler.buffer.layout()


class FailingSource:
    """Generation 0 is fine; generation 1 (the first one built in the background) fails."""

    def __init__(self, inner: RolloutGenerator) -> None:
        self.inner = inner

    def generate(self, learner, number, policy_step):
        if number == 1:
            raise ValueError("the model produced NaN")
        return self.inner.generate(learner, number, policy_step)

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)


def test_a_failure_on_the_worker_surfaces_on_the_trainer_thread(small_data, tiny_model):
    source = FailingSource(RolloutGenerator(tiny_model, small_data.observations, HORIZON, STARTS, seed=0))
    sampler = make_sampler(small_data, tiny_model, None, source=source)
    learner = make_learner(small_data)
    sampler.prepare(0, learner)  # generation 0 synchronously, generation 1 starts on the worker
    with pytest.raises(RuntimeError, match=r"background rollout generation 1 .* ValueError: the model produced NaN"):
        sampler.prepare(REFRESH, learner)
    sampler.close()


def test_rollouts_draw_the_policy_noise_from_their_own_generator(small_data, tiny_model):
    """The global RNG (the learner's) is untouched by a generation, and the generation repeats from its state."""
    generator = RolloutGenerator(tiny_model, small_data.observations, HORIZON, STARTS, seed=0)
    learner = make_learner(small_data)
    start = generator.state_dict()
    global_state = torch.get_rng_state()
    first = generator.generate(learner, 0, 0)
    assert torch.equal(torch.get_rng_state(), global_state)
    torch.manual_seed(123)  # a different global RNG must not change the generation
    generator.load_state_dict(start)
    second = generator.generate(learner, 0, 0)
    assert torch.equal(first.actions, second.actions) and torch.equal(first.observations, second.observations)


def test_close_cancels_a_generation_in_flight(small_data, tiny_model):
    sampler = make_sampler(small_data, tiny_model, None)
    sampler.prepare(0, make_learner(small_data))
    pending = sampler.pending
    assert pending is not None and pending.thread.is_alive() or pending.result is not None
    sampler.close()
    assert sampler.pending is None and not pending.thread.is_alive()
