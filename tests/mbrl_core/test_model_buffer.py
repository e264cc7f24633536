"""The model buffer (a FIFO of rows, as MOPO's model pool) and the mixed sampler (real fraction, refresh,
replay, exact resume)."""

from __future__ import annotations

import pytest
import torch

from mbrl_core.errors import ConfigError
from mbrl_core.model_buffer import ModelBuffer
from mbrl_core.rollout_store import RolloutGeneration, RolloutStore
from mbrl_core.sampler import MixedSampler, RealSampler

OBS_DIM, ACT_DIM = 4, 1


def generation(number: int, rows: int, policy_step: int = 0) -> RolloutGeneration:
    """Rows whose observations encode (generation, row) so a sample tells where it came from."""
    marks = torch.arange(rows, dtype=torch.float32)
    observations = torch.stack([torch.full((rows,), float(number)), marks, marks * 0, marks * 0], 1)
    return RolloutGeneration(
        number=number,
        policy_step=policy_step,
        observations=observations,
        actions=torch.zeros(rows, ACT_DIM),
        rewards=marks + 100 * number,
        next_observations=observations + 1,
        terminals=(marks % 3 == 0).float(),
        rollout_ids=torch.arange(rows) % 7,
        step_indices=torch.arange(rows) // 7,
        uncertainty={"max_std_norm": marks / rows},
    )


class CountingSource:
    """A stand-in rollout generator: random row counts from its own generator, numbers as asked."""

    def __init__(self, seed: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.calls: list[tuple[int, int]] = []

    def generate(self, learner, number: int, policy_step: int) -> RolloutGeneration:
        self.calls.append((number, policy_step))
        rows = int(torch.randint(20, 40, (1,), generator=self.generator))
        return generation(number, rows, policy_step)

    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])


def sampled_rows(buffer: ModelBuffer, draws: int = 20_000) -> set[tuple[int, int]]:
    """The (generation, row) pairs a large uniform draw from the buffer sees."""
    batch = buffer.sample(draws, torch.Generator().manual_seed(1))
    return set(zip(batch.observations[:, 0].long().tolist(), batch.observations[:, 1].long().tolist()))


def test_buffer_keeps_the_newest_rows_and_their_fields_aligned():
    buffer = ModelBuffer(capacity=60, device="cpu")
    for number in range(5):
        buffer.add(generation(number, 20))
    assert [slot.number for slot in buffer.slots] == [2, 3, 4] and len(buffer) == 60
    batch = buffer.sample(5000, torch.Generator().manual_seed(0))
    assert set(batch.observations[:, 0].tolist()) == {2.0, 3.0, 4.0}
    assert batch.synthetic.all() and set(batch.uncertainty) == {"max_std_norm"}
    # The row fields stay aligned through the ring: reward = row + 100 * generation.
    assert torch.equal(batch.rewards, batch.observations[:, 1] + 100 * batch.observations[:, 0])
    assert torch.equal(batch.next_observations, batch.observations + 1)


def test_shorter_generations_leave_room_for_more_of_them():
    # MOPO's pool: retain 5 x batch x horizon ROWS. Rollouts that end early keep more generations.
    full, short = ModelBuffer(capacity=100, device="cpu"), ModelBuffer(capacity=100, device="cpu")
    for number in range(12):
        full.add(generation(number, 20))
        short.add(generation(number, 10))
    assert [slot.number for slot in full.slots] == [7, 8, 9, 10, 11]
    assert [slot.number for slot in short.slots] == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]


def test_the_oldest_generation_loses_its_first_rows_and_the_ring_wraps():
    buffer = ModelBuffer(capacity=50, device="cpu")
    buffer.add(generation(0, 20))
    buffer.add(generation(1, 20))
    buffer.add(generation(2, 25))  # wraps past the end, overwriting the first 15 rows of generation 0
    assert [(slot.number, slot.skip, slot.length) for slot in buffer.slots] == [(0, 15, 5), (1, 0, 20), (2, 0, 25)]
    expected = {(0, r) for r in range(15, 20)} | {(1, r) for r in range(20)} | {(2, r) for r in range(25)}
    assert len(buffer) == 50 and sampled_rows(buffer) == expected
    buffer.add(generation(3, 5))  # the last 5 rows of generation 0 go
    assert [(slot.number, slot.skip, slot.length) for slot in buffer.slots] == [(1, 0, 20), (2, 0, 25), (3, 0, 5)]
    assert sampled_rows(buffer) == {(g, r) for g, rows in [(1, 20), (2, 25), (3, 5)] for r in range(rows)}


def test_a_generation_larger_than_the_buffer_is_refused():
    with pytest.raises(ConfigError, match="does not fit the model buffer"):
        ModelBuffer(capacity=10, device="cpu").add(generation(0, 11))


def test_mixed_batch_has_the_real_fraction_and_marks_synthetic_rows(small_data):
    buffer = ModelBuffer(capacity=1000, device="cpu")
    sampler = MixedSampler(
        RealSampler(small_data, seed=0), buffer, CountingSource(), batch_size=200, real_fraction=0.05, refresh_every=10
    )
    sampler.prepare(0, learner=None)
    batch = sampler.sample()
    assert len(batch) == 200
    assert (~batch.synthetic).sum() == 10 and batch.synthetic[10:].all()
    assert torch.equal(batch.uncertainty["max_std_norm"][:10], torch.zeros(10))
    # Real rows are dataset rows.
    real_obs = batch.observations[:10]
    assert all((small_data.observations == row).all(1).any() for row in real_obs)


def test_refresh_cadence(small_data):
    source = CountingSource()
    sampler = MixedSampler(
        RealSampler(small_data), ModelBuffer(1000, "cpu"), source, batch_size=64, real_fraction=0.5, refresh_every=10
    )
    for step in range(35):
        metrics = sampler.prepare(step, learner=None)
        assert bool(metrics) == (step % 10 == 0)
        sampler.sample()
    assert source.calls == [(0, 0), (1, 10), (2, 20), (3, 30)]
    assert sampler.prepare(30, learner=None) == {}  # the same step never refreshes twice


def new_store(url) -> RolloutStore:
    return RolloutStore.create(url, obs_dim=OBS_DIM, act_dim=ACT_DIM, uncertainty_names=["max_std_norm"], metadata={})


def make_sampler(data, store, seed=0, replay=None, source=True):
    return MixedSampler(
        RealSampler(data, seed=seed),
        ModelBuffer(capacity=100, device="cpu"),
        CountingSource(seed) if source else None,
        batch_size=32,
        real_fraction=0.25,
        refresh_every=5,
        seed=seed,
        store=store,
        replay=replay,
    )


def run(sampler, start: int, stop: int) -> list:
    batches = []
    for step in range(start, stop):
        sampler.prepare(step, learner=None)
        batches.append(sampler.sample())
    return batches


def test_resume_is_exact(small_data, tmp_path):
    straight = make_sampler(small_data, new_store(tmp_path / "a.zarr"))
    expected = run(straight, 0, 60)
    straight.close()

    first = make_sampler(small_data, new_store(tmp_path / "b.zarr"))
    run(first, 0, 27)
    checkpoint = first.state_dict()
    assert checkpoint["layout"][0]["skip"] > 0  # the ring to rebuild holds a partly overwritten generation
    run(first, 27, 40)  # work after the checkpoint that a crash loses
    first.close()

    resumed = make_sampler(small_data, RolloutStore.open(tmp_path / "b.zarr", mode="a"))
    resumed.load_state_dict(checkpoint)
    got = run(resumed, 27, 60)
    resumed.close()
    for want, have in zip(expected[27:], got):
        for name in ("observations", "actions", "rewards", "next_observations", "terminals", "synthetic"):
            assert torch.equal(getattr(want, name), getattr(have, name)), name
        assert torch.equal(want.uncertainty["max_std_norm"], have.uncertainty["max_std_norm"])
    # The store was cut back to the checkpoint, then continued: same generations as the straight run.
    assert [g["number"] for g in RolloutStore.open(tmp_path / "b.zarr").generations] == list(range(12))


def test_replay_uses_stored_generations_then_generates(small_data, tmp_path):
    earlier = make_sampler(small_data, new_store(tmp_path / "earlier.zarr"), seed=3)
    run(earlier, 0, 15)  # three generations
    earlier.close()
    replay = RolloutStore.open(tmp_path / "earlier.zarr")
    sampler = make_sampler(small_data, new_store(tmp_path / "new.zarr"), seed=9, replay=replay)
    run(sampler, 0, 20)
    sampler.close()
    slots = list(sampler.buffer.slots)
    assert [(slot.source, slot.number) for slot in slots] == [("replay", n) for n in range(4 - len(slots), 3)] + [
        ("own", 3)
    ]
    assert sampler.source.calls == [(3, 15)]  # only the fourth generation was generated
    for slot in slots[:-1]:
        stored = replay.read_generation(slot.number)
        rows = (torch.arange(slot.length) + slot.offset) % sampler.buffer.capacity
        assert torch.equal(sampler.buffer.columns["rewards"][rows], stored.rewards[slot.skip :])
    assert [g["number"] for g in RolloutStore.open(tmp_path / "new.zarr").generations] == [3]


def test_replay_alone_runs_out_clearly(small_data, tmp_path):
    earlier = make_sampler(small_data, new_store(tmp_path / "earlier.zarr"))
    run(earlier, 0, 5)
    earlier.close()
    sampler = make_sampler(small_data, None, replay=RolloutStore.open(tmp_path / "earlier.zarr"), source=False)
    run(sampler, 0, 5)
    with pytest.raises(Exception, match="ran out of generations"):
        sampler.prepare(5, learner=None)
