"""The data layer: Minari episodes to aligned transition tensors, fingerprints, refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from mbrl_core.data import DatasetInfo, load_dataset, transitions_from_episodes
from mbrl_core.errors import DatasetError
from mbrl_core.minari_writer import write_minari_dataset
from mbrl_core.sampler import RealSampler

OBS_SPACE = gym.spaces.Box(-10, 10, (2,), np.float32)
ACT_SPACE = gym.spaces.Box(-1, 1, (1,), np.float32)
INFO = DatasetInfo("test/hand-v0", OBS_SPACE, ACT_SPACE)


def episode(length: int, offset: float, terminated: bool, truncated: bool) -> dict[str, np.ndarray]:
    """Observation t is (offset + t, -(offset + t)); action t is t/10; reward t is offset + t."""
    steps = np.arange(length + 1, dtype=np.float64) + offset
    terminations = np.zeros(length, bool)
    truncations = np.zeros(length, bool)
    terminations[-1], truncations[-1] = terminated, truncated
    return {
        "observations": np.stack([steps, -steps], axis=1),
        "actions": (np.arange(length) / 10.0).reshape(-1, 1),
        "rewards": steps[:-1].copy(),
        "terminations": terminations,
        "truncations": truncations,
    }


def test_transitions_are_aligned_and_flags_follow_minari_semantics():
    episodes = [
        episode(3, 0.0, terminated=True, truncated=False),
        episode(2, 100.0, terminated=False, truncated=True),
        episode(2, 200.0, terminated=True, truncated=True),
    ]
    data = transitions_from_episodes(episodes, INFO)
    assert len(data) == 7
    # next observation of transition t is observation t + 1 of the same episode, never the next episode's first
    assert torch.equal(data.next_observations[:, 0], data.observations[:, 0] + 1)
    assert data.observations[3, 0] == 100.0 and data.next_observations[2, 0] == 3.0
    assert data.rewards.tolist() == [0, 1, 2, 100, 101, 200, 201]
    # termination stops bootstrapping; a pure truncation is a timeout; terminated+truncated is a terminal, not a timeout
    assert data.terminals.tolist() == [0, 0, 1, 0, 0, 0, 1]
    assert data.timeouts.tolist() == [0, 0, 0, 0, 1, 0, 0]
    assert data.episode_starts.tolist() == [1, 0, 0, 1, 0, 1, 0]
    assert data.episode_returns().tolist() == [3.0, 201.0, 401.0]
    assert data.observations.is_contiguous() and data.observations.dtype == torch.float32


def test_fingerprint_depends_on_content_and_is_stable_across_processes():
    episodes = [episode(3, 0.0, True, False)]
    first = transitions_from_episodes(episodes, INFO).fingerprint
    changed = [episode(3, 0.5, True, False)]
    assert transitions_from_episodes(changed, INFO).fingerprint != first
    code = (
        "from tests.mbrl_core.test_data import episode, INFO; from mbrl_core.data import transitions_from_episodes;"
        "print(transitions_from_episodes([episode(3, 0.0, True, False)], INFO).fingerprint)"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == first


def test_load_from_minari_round_trip(minari_root):
    episodes = [episode(4, 0.0, True, False), episode(3, 10.0, False, True)]
    write_minari_dataset(
        "test/roundtrip-v0",
        episodes,
        env_id="Pendulum-v1",
        ref_min_score=-1.0,
        ref_max_score=1.0,
        overwrite=True,
        observation_space=OBS_SPACE,
        action_space=ACT_SPACE,
    )
    data = load_dataset("test/roundtrip-v0")
    assert (
        len(data) == 7
        and data.terminals.tolist() == [0, 0, 0, 1, 0, 0, 0]
        and data.timeouts.tolist() == [0, 0, 0, 0, 0, 0, 1]
    )
    assert data.info.env_id == "Pendulum-v1"
    assert data.info.normalized_score(0.0) == pytest.approx(50.0)
    assert data.fingerprint == load_dataset("test/roundtrip-v0").fingerprint


def test_sampler_draws_rows_of_the_dataset_and_is_seeded(small_data):
    first, second = RealSampler(small_data, 64, seed=3), RealSampler(small_data, 64, seed=3)
    batch = first.sample()
    assert torch.equal(batch.observations, second.sample().observations)
    rows = (small_data.observations[:, None, :] == batch.observations[None]).all(-1).any(0)
    assert rows.all() and len(batch) == 64


def test_refuses_empty_dataset():
    with pytest.raises(DatasetError, match="empty"):
        transitions_from_episodes([], INFO)


def test_refuses_nan_and_says_how_many_and_where():
    bad = episode(3, 0.0, True, False)
    bad["observations"][2, 1] = np.nan
    bad["rewards"][0] = np.inf
    with pytest.raises(
        DatasetError, match=r"1 in observations \(first at transition 2\).*1 in rewards \(first at transition 0\)"
    ):
        transitions_from_episodes([bad], INFO)


def test_refuses_mismatched_lengths():
    bad = episode(3, 0.0, True, False)
    bad["rewards"] = bad["rewards"][:2]
    with pytest.raises(DatasetError, match="episode 0: mismatched lengths: 3 actions but rewards 2"):
        transitions_from_episodes([bad], INFO)


def test_refuses_non_box_spaces(minari_root):
    env = gym.make("CartPole-v1")
    observation, _ = env.reset(seed=0)
    observations, actions = [observation], []
    for _ in range(3):
        observation, *_ = env.step(0)
        observations.append(observation)
        actions.append(0)
    ep = {
        "observations": np.array(observations),
        "actions": np.array(actions),
        "rewards": np.ones(3),
        "terminations": np.zeros(3, bool),
        "truncations": np.array([0, 0, 1], bool),
    }
    import minari
    from minari.data_collector import EpisodeBuffer

    if "test/discrete-v0" in minari.list_local_datasets():
        minari.delete_dataset("test/discrete-v0")
    minari.create_dataset_from_buffers(
        "test/discrete-v0", [EpisodeBuffer(id=0, infos={}, **ep)], env="CartPole-v1", algorithm_name="x"
    )
    with pytest.raises(DatasetError, match="action space Discrete is not supported"):
        load_dataset("test/discrete-v0")


def test_unknown_id_fails_in_one_clear_line(minari_root):
    with pytest.raises(DatasetError) as error:
        load_dataset("nobody/nothing-v0")
    message = str(error.value)
    assert "'nobody/nothing-v0'" in message and minari_root in message and "\n" not in message


def test_values_beyond_float32_are_refused_after_the_cast():
    bad = episode(3, 0.0, True, False)
    bad["rewards"][1] = 1e300  # finite in float64, inf in the float32 tensors training uses
    bad["observations"][0, 0] = -1e39
    with pytest.raises(
        DatasetError,
        match=r"beyond float32's range.*1 in observations \(first at transition 0\).*1 in rewards \(first at "
        r"transition 1\)",
    ):
        transitions_from_episodes([bad], INFO)


def test_a_damaged_data_file_is_refused_in_one_line(minari_root):
    write_minari_dataset(
        "test/damaged-v0",
        [episode(4, 0.0, True, False)],
        env_id="Pendulum-v1",
        overwrite=True,
        observation_space=OBS_SPACE,
        action_space=ACT_SPACE,
    )
    path = Path(minari_root) / "test" / "damaged-v0" / "data" / "main_data.hdf5"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DatasetError, match="'test/damaged-v0' cannot be read: its data file is damaged or truncated"):
        load_dataset("test/damaged-v0", download=False)
