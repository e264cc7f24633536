"""Shared fixtures: an isolated Minari root and small datasets built offline."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def minari_root(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("minari")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    return str(root)


@pytest.fixture(scope="session")
def small_dataset_id(minari_root) -> str:
    """The embedded InvertedPendulum dataset at 5,000 transitions."""
    from mbrl_core.embedded import build_default_dataset

    return build_default_dataset("test/invertedpendulum/noisy-v0", transitions=5_000, seed=0)


@pytest.fixture(scope="session")
def small_data(small_dataset_id):
    from mbrl_core.data import load_dataset

    return load_dataset(small_dataset_id)
