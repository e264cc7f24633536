"""The data layer: Minari datasets as contiguous tensors.

A Minari episode holds T+1 observations for T actions. Transition ``t`` of an
episode is ``(obs[t], act[t], rew[t], obs[t+1])``. Its *terminal* flag is the
environment's termination (bootstrapping stops); its *timeout* flag is a
truncation that is not also a termination (bootstrapping continues). A last
step that is both terminated and truncated is a terminal.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from mbrl_core.batch import FLOAT_FIELDS, TRANSITION_FIELDS
from mbrl_core.errors import DatasetError
from mbrl_core.normalization import Normalizer

FIELDS = (*TRANSITION_FIELDS, "timeouts", "episode_starts")


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is, independent of its transitions."""

    dataset_id: str
    observation_space: gym.spaces.Box
    action_space: gym.spaces.Box
    env_id: str | None = None
    env_spec_json: str | None = None
    ref_min_score: float | None = None
    ref_max_score: float | None = None
    # random, medium, medium-replay, expert or medium-expert, as `mbrl collect` records it (None: not recorded)
    dataset_kind: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def obs_dim(self) -> int:
        return int(np.prod(self.observation_space.shape))

    @property
    def act_dim(self) -> int:
        return int(np.prod(self.action_space.shape))

    @property
    def has_refs(self) -> bool:
        return self.ref_min_score is not None and self.ref_max_score is not None

    def normalized_score(self, episode_return: float) -> float | None:
        """100 · (R − ref_min) / (ref_max − ref_min), or None without refs."""
        if self.ref_min_score is None or self.ref_max_score is None:
            return None
        return 100.0 * (episode_return - self.ref_min_score) / (self.ref_max_score - self.ref_min_score)


@dataclass
class TransitionData:
    """All transitions of a dataset as contiguous tensors on one device.

    ``terminals``, ``timeouts`` and ``episode_starts`` are float tensors of 0/1
    so they enter losses without casts.
    """

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_observations: torch.Tensor
    terminals: torch.Tensor
    timeouts: torch.Tensor
    episode_starts: torch.Tensor
    info: DatasetInfo
    fingerprint: str = ""

    def __post_init__(self) -> None:
        if not self.fingerprint:
            self.fingerprint = compute_fingerprint(self)

    def __len__(self) -> int:
        return int(self.observations.shape[0])

    @property
    def device(self) -> torch.device:
        return self.observations.device

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    def to(self, device: torch.device | str) -> TransitionData:
        moved = {name: getattr(self, name).to(device).contiguous() for name in FIELDS}
        return replace(self, **moved)

    def subset(self, index: torch.Tensor) -> TransitionData:
        """The transitions at ``index`` (a new fingerprint is computed)."""
        picked = {name: getattr(self, name)[index].contiguous() for name in FIELDS}
        return TransitionData(**picked, info=self.info)

    def episode_ids(self) -> torch.Tensor:
        """Episode number of every transition (0-based, in dataset order)."""
        return torch.cumsum(self.episode_starts, 0).long() - 1

    def episode_returns(self) -> torch.Tensor:
        """Undiscounted return of each episode (partial last episodes included)."""
        ids = self.episode_ids()
        returns = torch.zeros(int(ids.max()) + 1, dtype=torch.float64, device=self.device)
        return returns.index_add_(0, ids, self.rewards.double())

    def observation_normalizer(self, eps: float = 1e-3) -> Normalizer:
        return Normalizer.fit(self.observations, eps=eps)


def compute_fingerprint(data: TransitionData) -> str:
    """A content hash of the transitions and spaces, identical across processes and devices."""
    digest = hashlib.sha256()
    for name in FIELDS:
        array = getattr(data, name).detach().cpu().contiguous().numpy()
        digest.update(name.encode())
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array, dtype="<f4").tobytes())
    for space in (data.info.observation_space, data.info.action_space):
        digest.update(np.asarray(space.low, dtype="<f8").tobytes())
        digest.update(np.asarray(space.high, dtype="<f8").tobytes())
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------- loading


def local_datasets_root() -> Path:
    """Where Minari looks for local datasets (``MINARI_DATASETS_PATH`` or ``~/.minari/datasets``)."""
    root = os.environ.get("MINARI_DATASETS_PATH")
    return Path(root) if root else Path.home() / ".minari" / "datasets"


def load_minari(dataset_id: str, download: bool = True):
    """Open a Minari dataset by id: local first, then a remote download."""
    import minari

    try:
        return minari.load_dataset(dataset_id)
    except FileNotFoundError:
        pass
    except Exception as error:  # a local copy exists but cannot be read
        raise DatasetError(
            f"dataset '{dataset_id}' exists locally under {local_datasets_root()} but cannot be read: {error}"
        ) from error
    if not download:
        raise DatasetError(
            f"dataset '{dataset_id}' not found locally under {local_datasets_root()} (set "
            "MINARI_DATASETS_PATH to look elsewhere)"
        )
    try:
        return minari.load_dataset(dataset_id, download=True)
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DatasetError(
            f"dataset '{dataset_id}' not found locally under {local_datasets_root()} and could not be "
            f"downloaded ({reason}); "
            "build one with `mbrl collect` or set MINARI_DATASETS_PATH"
        ) from error


def load_dataset(dataset_id: str, device: torch.device | str = "cpu", download: bool = True) -> TransitionData:
    """Load a Minari dataset by id into tensors on ``device``."""
    dataset = load_minari(dataset_id, download=download)
    info = dataset_info(dataset)
    try:
        episodes = list(dataset.iterate_episodes())
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as error:  # h5py's damaged-file errors
        raise DatasetError(
            f"dataset '{dataset_id}' cannot be read: its data file is damaged or truncated "
            f"({type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]})"
        ) from error
    return transitions_from_episodes(episodes, info).to(device)


def dataset_info(dataset) -> DatasetInfo:
    """Spaces, env and reference scores of an open Minari dataset."""
    metadata = dict(dataset.storage.metadata)
    dataset_id = str(metadata.get("dataset_id", getattr(dataset.spec, "dataset_id", "unknown")))
    obs_space, act_space = dataset.observation_space, dataset.action_space
    require_box(obs_space, "observation", dataset_id)
    require_box(act_space, "action", dataset_id)
    env_spec_json = metadata.get("env_spec")
    env_id = json.loads(env_spec_json)["id"] if env_spec_json else None
    return DatasetInfo(
        dataset_id=dataset_id,
        observation_space=obs_space,
        action_space=act_space,
        env_id=env_id,
        env_spec_json=env_spec_json,
        ref_min_score=_optional_float(metadata.get("ref_min_score")),
        ref_max_score=_optional_float(metadata.get("ref_max_score")),
        dataset_kind=str(metadata["dataset_kind"]) if metadata.get("dataset_kind") else None,
        metadata={k: v for k, v in metadata.items() if isinstance(v, (str, int, float, bool))},
    )


def require_box(space: gym.Space, what: str, where: str) -> None:
    if not isinstance(space, gym.spaces.Box):
        raise DatasetError(
            f"dataset '{where}': {what} space {type(space).__name__} is not supported (only continuous Box spaces are)"
        )


def _optional_float(value) -> float | None:
    return None if value is None else float(value)


def transitions_from_episodes(episodes: Iterable, info: DatasetInfo) -> TransitionData:
    """Flatten Minari episodes (objects or dicts with observations, actions, rewards,
    terminations, truncations) into aligned transition tensors, validating as we go."""
    arrays = as_float32(transition_arrays(episodes, info))
    check_finite(arrays, info.dataset_id)  # after the cast: a value beyond float32's range is inf from here on
    observations, actions, rewards, next_observations, terminals, timeouts, starts = (
        torch.from_numpy(arrays[name]) for name in FIELDS
    )
    return TransitionData(observations, actions, rewards, next_observations, terminals, timeouts, starts, info=info)


def as_float32(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays as contiguous float32, the dtype training sees (values beyond its range become inf)."""
    with np.errstate(over="ignore"):
        return {name: np.ascontiguousarray(array, dtype=np.float32) for name, array in arrays.items()}


def transition_arrays(episodes: Iterable, info: DatasetInfo) -> dict[str, np.ndarray]:
    """The aligned transition arrays of Minari episodes, shapes and lengths checked but
    values untouched (NaN/inf kept, so a report can say where they are)."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in FIELDS}
    for number, episode in enumerate(episodes):
        for name, array in _episode_transitions(episode, number, info).items():
            parts[name].append(array)
    if not parts["actions"]:
        raise DatasetError(f"dataset '{info.dataset_id}' is empty: it holds no transitions")
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def _get(episode, name: str):
    return episode[name] if isinstance(episode, dict) else getattr(episode, name)


def _episode_transitions(episode, number: int, info: DatasetInfo) -> dict[str, np.ndarray]:
    observations = _flat(_get(episode, "observations"), "observations", number, info)
    actions = _flat(_get(episode, "actions"), "actions", number, info)
    rewards = np.asarray(_get(episode, "rewards"), dtype=np.float64).reshape(-1)
    terminations = np.asarray(_get(episode, "terminations"), dtype=bool).reshape(-1)
    truncations = np.asarray(_get(episode, "truncations"), dtype=bool).reshape(-1)
    steps = actions.shape[0]
    lengths = {
        "observations": observations.shape[0] - 1,
        "rewards": len(rewards),
        "terminations": len(terminations),
        "truncations": len(truncations),
    }
    wrong = {name: n for name, n in lengths.items() if n != steps}
    if wrong:
        detail = ", ".join(f"{name} {n + (1 if name == 'observations' else 0)}" for name, n in wrong.items())
        raise DatasetError(
            f"dataset '{info.dataset_id}' episode {number}: mismatched lengths: {steps} actions but {detail} "
            f"(expected {steps + 1} observations and {steps} of each per-step field)"
        )
    _check_dims(observations, info.obs_dim, "observation", number, info)
    _check_dims(actions, info.act_dim, "action", number, info)
    starts = np.zeros(steps, dtype=np.float32)
    starts[:1] = 1.0
    return {
        "observations": observations[:-1],
        "actions": actions,
        "rewards": rewards,
        "next_observations": observations[1:],
        "terminals": terminations.astype(np.float32),
        "timeouts": (truncations & ~terminations).astype(np.float32),
        "episode_starts": starts,
    }


def _flat(values, name: str, number: int, info: DatasetInfo) -> np.ndarray:
    if isinstance(values, dict):
        raise DatasetError(
            f"dataset '{info.dataset_id}' episode {number}: dict {name} are not supported (only Box spaces are)"
        )
    array = np.asarray(values, dtype=np.float64)
    return array.reshape(array.shape[0], -1) if array.ndim != 2 else array


def _check_dims(array: np.ndarray, expected: int, what: str, number: int, info: DatasetInfo) -> None:
    if array.shape[1] != expected:
        raise DatasetError(
            f"dataset '{info.dataset_id}' episode {number}: {what}s have {array.shape[1]} dimensions "
            f"but the {what} space has {expected}"
        )


def check_finite(arrays: dict[str, np.ndarray], dataset_id: str) -> None:
    """Refuse NaN/inf (in float32, the dtype training uses), saying how many values and where the first one is."""
    problems = []
    for name in FLOAT_FIELDS:
        bad = ~np.isfinite(arrays[name])
        count = int(bad.sum())
        if count:
            first_row = int(np.argwhere(bad)[0][0])
            problems.append(f"{count} in {name} (first at transition {first_row})")
    if problems:
        raise DatasetError(
            f"dataset '{dataset_id}' has non-finite values (NaN, inf, or beyond float32's range of "
            f"±{np.finfo(np.float32).max:.3g}): " + "; ".join(problems)
        )
