"""Write episodes as a Minari dataset with ``minari.create_dataset_from_buffers``.

Minari's DataCollector needs jax; building the episode buffers ourselves does not.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from mbrl_core.errors import DatasetError


def write_minari_dataset(
    dataset_id: str,
    episodes: Sequence[dict[str, np.ndarray]],
    env_id: str,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
    algorithm_name: str = "scripted",
    description: str = "",
    overwrite: bool = False,
    observation_space=None,
    action_space=None,
):
    """Create a local Minari dataset from episode dicts (observations T+1, actions/rewards/terminations/truncations T).

    Spaces default to the environment's; pass them when the data is not from ``env_id`` itself.
    """
    import minari
    from minari.data_collector import EpisodeBuffer

    if dataset_id in minari.list_local_datasets():
        if not overwrite:
            raise DatasetError(f"dataset '{dataset_id}' already exists locally; pass overwrite=True to replace it")
        minari.delete_dataset(dataset_id)
    buffers = [
        EpisodeBuffer(
            id=number,
            observations=np.asarray(ep["observations"], dtype=np.float64),
            actions=np.asarray(ep["actions"], dtype=np.float32),
            rewards=np.asarray(ep["rewards"], dtype=np.float64),
            terminations=np.asarray(ep["terminations"], dtype=bool),
            truncations=np.asarray(ep["truncations"], dtype=bool),
            infos={},
        )
        for number, ep in enumerate(episodes)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Minari warns about every unset optional field (author, permalink, ...)
        return minari.create_dataset_from_buffers(
            dataset_id=dataset_id,
            buffer=buffers,
            env=env_id,
            algorithm_name=algorithm_name,
            author="mbrl-offline-suite",
            author_email="none",
            code_permalink="https://pypi.org/project/mbrl-offline-suite/",
            ref_min_score=ref_min_score,
            ref_max_score=ref_max_score,
            description=description or f"{dataset_id} ({algorithm_name})",
            observation_space=observation_space,
            action_space=action_space,
        )
