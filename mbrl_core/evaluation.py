"""Evaluation: run the deterministic policy in the dataset's gymnasium env, report returns and normalized score."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import cast

import gymnasium as gym
import numpy as np
import torch

from mbrl_core.data import DatasetInfo
from mbrl_core.errors import ConfigError, DatasetError

ActFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class EvalResult:
    step: int
    return_mean: float
    return_std: float
    normalized_score: float | None
    episodes: int
    returns: list[float]
    lengths: list[int]

    def summary(self) -> dict:
        """The fields a run's eval.json keeps per evaluation (no per-episode lists)."""
        record = asdict(self)
        record.pop("returns")
        record.pop("lengths")
        return record


def env_spec_for(info: DatasetInfo, env_id: str | None = None) -> gym.envs.registration.EnvSpec | str:
    """The environment to evaluate in: an explicit id, else the one recorded in the dataset."""
    if env_id:
        return env_id
    eval_spec = info.metadata.get("eval_env_spec")
    spec_json = eval_spec if isinstance(eval_spec, str) else info.env_spec_json
    if not spec_json:
        raise DatasetError(f"dataset '{info.dataset_id}' records no environment; pass an env id to evaluate in (--env)")
    try:
        return gym.envs.registration.EnvSpec.from_json(spec_json)
    except Exception:
        return json.loads(spec_json)["id"]


# MuJoCo notices about Gymnasium's own model files: nothing a user of this library can act on.
UNACTIONABLE_MUJOCO_NOTICES = ("compiler attribute 'settotalmass' is deprecated",)


def quiet_mujoco_notices() -> None:
    """Drop MuJoCo's unactionable notices; pass its other warnings on as Python warnings.

    MuJoCo's default handler prints every warning to stdout and appends it to
    ``MUJOCO_LOG.TXT`` in the working directory. A handler someone else installed
    is left alone. Call before creating environments (per process).
    """
    try:
        import mujoco
    except ImportError:
        return
    if mujoco.get_mju_user_warning() is None:
        mujoco.set_mju_user_warning(_forward_mujoco_warning)


def _forward_mujoco_warning(message: str) -> None:
    if not any(notice in message for notice in UNACTIONABLE_MUJOCO_NOTICES):
        warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)


def make_vector_env(spec, episodes: int) -> gym.vector.SyncVectorEnv:
    quiet_mujoco_notices()
    try:
        return gym.vector.SyncVectorEnv([lambda: gym.make(spec) for _ in range(episodes)])
    except gym.error.Error as error:
        raise DatasetError(f"cannot create evaluation environment {getattr(spec, 'id', spec)}: {error}") from error


def check_env_fits(envs: gym.vector.VectorEnv, info: DatasetInfo) -> None:
    """Refuse an environment whose observation or action shape differs from the dataset's."""
    for what, env_space, data_space in (
        ("observations", envs.single_observation_space, info.observation_space),
        ("actions", envs.single_action_space, info.action_space),
    ):
        if tuple(env_space.shape or ()) != tuple(data_space.shape):
            env_id = envs.envs[0].spec.id if isinstance(envs, gym.vector.SyncVectorEnv) and envs.envs[0].spec else "the"
            raise DatasetError(
                f"{env_id} environment has {what} of shape {tuple(env_space.shape or ())}, the policy was trained on "
                f"'{info.dataset_id}' with {what} of shape {tuple(data_space.shape)}"
            )


class Evaluator:
    """Runs ``episodes`` episodes at once in a vector env; episode ``i`` is reset with seed ``seed + i``."""

    def __init__(
        self,
        info: DatasetInfo,
        episodes: int = 10,
        seed: int = 0,
        env_id: str | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
            raise ConfigError(f"the number of evaluation episodes must be at least 1, not {episodes!r}")
        self.info = info
        self.episodes = episodes
        self.seed = seed
        self.device = torch.device(device)
        self.envs = make_vector_env(env_spec_for(info, env_id), episodes)
        try:
            check_env_fits(self.envs, info)
        except DatasetError:
            self.envs.close()
            raise

    @torch.no_grad()
    def __call__(self, act: ActFn, step: int = 0) -> EvalResult:
        observations: np.ndarray
        rewards: np.ndarray
        terminated: np.ndarray
        truncated: np.ndarray
        observations, _ = self.envs.reset(seed=[self.seed + i for i in range(self.episodes)])
        returns = np.zeros(self.episodes)
        lengths = np.zeros(self.episodes, dtype=int)
        running = np.ones(self.episodes, dtype=bool)
        action_space = cast(gym.spaces.Box, self.envs.single_action_space)  # Box: checked at load
        low, high = action_space.low, action_space.high
        while running.any():
            obs = torch.as_tensor(np.asarray(observations, dtype=np.float32), device=self.device)
            actions = np.clip(act(obs).detach().cpu().numpy(), low, high)
            observations, rewards, terminated, truncated, _ = self.envs.step(actions)
            returns += rewards * running
            lengths += running
            running &= ~(terminated | truncated)
        mean = float(returns.mean())
        return EvalResult(
            step=step,
            return_mean=mean,
            return_std=float(returns.std()),
            normalized_score=self.info.normalized_score(mean),
            episodes=self.episodes,
            returns=returns.tolist(),
            lengths=lengths.tolist(),
        )

    def close(self) -> None:
        self.envs.close()
