"""The embedded datasets build offline, deterministically, with meaningful reference scores."""

from __future__ import annotations

import json
from pathlib import Path

import minari
import numpy as np
import pytest

from mbrl_core.data import load_dataset
from mbrl_core.errors import DatasetError
from workflows.embedded import (
    KIND_METADATA_KEY,
    PENDULUM_ID,
    build_default_dataset,
    mean_return,
    swing_up_action,
    uniform_action,
)


def test_default_dataset_is_random_pendulum_data_with_scripted_references(minari_root):
    dataset_id = build_default_dataset("test/pendulum/random-v0", transitions=1_000)
    dataset = minari.load_dataset(dataset_id)
    metadata = dataset.storage.metadata
    assert dataset.total_steps == 1_000 and dataset.total_episodes == 5  # Pendulum episodes last 200 steps
    assert dataset.env_spec.id == PENDULUM_ID and metadata[KIND_METADATA_KEY] == "random"
    assert metadata["ref_min_score"] < -900 and metadata["ref_max_score"] > -200  # random vs swing-up controller
    data = load_dataset(dataset_id)
    assert data.actions.abs().max() <= 2.0 and data.actions.std() > 1.0  # uniform in [-2, 2]: std 1.15
    again = build_default_dataset("test/pendulum/random-again-v0", transitions=1_000)
    assert load_dataset(again).fingerprint == data.fingerprint
    assert build_default_dataset("test/pendulum/random-v0", transitions=1_000) == dataset_id  # existing: kept


def test_a_default_dataset_cut_short_is_written_again(minari_root):
    dataset_id = build_default_dataset("test/pendulum/cut-v0", transitions=1_000)
    complete = load_dataset(dataset_id).fingerprint
    data_dir = Path(minari_root) / dataset_id / "data"
    metadata = json.loads((data_dir / "metadata.json").read_text())
    del metadata[KIND_METADATA_KEY]  # written last: as a quickstart killed while writing the episodes leaves it
    (data_dir / "metadata.json").write_text(json.dumps(metadata))
    (data_dir / "main_data.hdf5").write_bytes(b"\0" * 100)
    with pytest.raises(DatasetError, match="damaged or truncated"):
        load_dataset(dataset_id)

    assert build_default_dataset("test/pendulum/cut-v0", transitions=1_000) == dataset_id
    assert load_dataset(dataset_id).fingerprint == complete


def test_the_reference_controller_swings_up_and_holds():
    # -121.8 over the 20 reference episodes; a pendulum left hanging scores about -1,000 an episode
    assert mean_return(PENDULUM_ID, lambda rng: swing_up_action, episodes=5) > -250
    assert mean_return(PENDULUM_ID, lambda rng: uniform_action(PENDULUM_ID, rng), episodes=3) < -800
    observation_upright_at_rest = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    assert swing_up_action(observation_upright_at_rest, np.random.default_rng(0)) == pytest.approx([0.0])
