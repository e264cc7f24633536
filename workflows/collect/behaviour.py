"""The behaviour policy: online SAC trained step by step, evaluated checkpoints, and an exact resume state.

Training state is saved at the first episode end after each checkpoint, and
every episode's reset seed is derived from the run seed and the episode's
number, so a resumed collection replays exactly what an uninterrupted one
would have done (on CPU). Everything saved with torch is tensors, dicts,
lists, numbers and strings: it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mbrl_core.atomic import load_torch, save_json, save_torch
from mbrl_core.config import build_config
from mbrl_core.data import DatasetInfo
from mbrl_core.device import select_device
from mbrl_core.errors import ConfigError, DatasetError
from mbrl_core.evaluation import Evaluator
from mbrl_core.learner import LearnerContext
from mbrl_core.normalization import Normalizer
from mbrl_core.progress import ProgressBar, progress_bar
from mbrl_core.seeding import seed_everything
from policies.sac import SAC, SACConfig
from workflows.collect.environment import as_float32, box, learner_policy, make_env, uniform_policy
from workflows.collect.replay import ReplayBuffer
from workflows.collect.settings import (
    RECORD_FILE,
    STATE_FILE,
    STATE_VERSION,
    CollectConfig,
    collection_dir,
    dataset_ids,
    stream_seed,
)


def online_context(
    obs_dim: int, action_low: np.ndarray, action_high: np.ndarray, total_updates: int, device: torch.device
) -> LearnerContext:
    """Online there is no dataset to fit a normalizer on: observations enter SAC unscaled (as in the SAC paper)."""
    low, high = (
        torch.as_tensor(np.asarray(bound), dtype=torch.float32, device=device).reshape(-1)
        for bound in (action_low, action_high)
    )
    return LearnerContext(
        obs_dim=obs_dim,
        act_dim=low.numel(),
        action_low=low,
        action_high=high,
        observation_normalizer=Normalizer.identity(obs_dim).to(device),
        total_steps=total_updates,
        device=device,
    )


def load_behaviour_policy(path: str | Path, device: torch.device | str = "cpu") -> SAC:
    """A SAC learner from a checkpoint in ``<name>/collection/policies/``; use ``act(obs, deterministic=False)``."""
    checkpoint = load_torch(Path(path), map_location=device)
    context = online_context(
        checkpoint["obs_dim"],
        np.asarray(checkpoint["action_low"]),
        np.asarray(checkpoint["action_high"]),
        checkpoint["total_updates"],
        torch.device(device),
    )
    learner = SAC(SACConfig(**checkpoint["sac_config"]), context)
    learner.load_state_dict(checkpoint["state"])
    return learner


def check_same_settings(saved: dict[str, Any], requested: dict[str, Any], name: str) -> None:
    changed = [key for key in saved if key != "device" and saved[key] != requested.get(key)]
    if changed:
        detail = ", ".join(f"{key}: {saved[key]!r} then, {requested.get(key)!r} now" for key in changed)
        raise ConfigError(
            f"collection '{name}' was started with other settings ({detail}); resume with the same "
            "ones, or pass --overwrite to start over"
        )


class BehaviourTraining:
    """Online SAC to ``sac_steps`` with evaluated checkpoints; owns the collection's record and resume state.

    The record (``collection.json``, also inside the state) is shared with the
    dataset recipe, which adds the reference scores, the medium choice and the
    datasets written so far.
    """

    def __init__(self, config: CollectConfig, progress: bool) -> None:
        self.config = config
        self.progress = progress
        self.directory = collection_dir(config.name)
        self.device = select_device(config.device)
        self.env = make_env(config.env_id)
        self.observation_space, self.action_space = box(self.env.observation_space), box(self.env.action_space)
        self.total_updates = config.sac_steps - config.warmup_steps
        self.sac_config = build_config(SACConfig, config.sac, "collect.sac")
        obs_dim, act_dim = (int(np.prod(space.shape)) for space in (self.observation_space, self.action_space))
        seed_everything(config.seed)  # the networks' initial weights
        self.sac = SAC(
            self.sac_config,
            online_context(obs_dim, self.action_space.low, self.action_space.high, self.total_updates, self.device),
        )
        self.buffer = ReplayBuffer(config.sac_steps, obs_dim, act_dim, self.device, stream_seed(config.seed, "train"))
        self.rng = np.random.default_rng(stream_seed(config.seed, "train"))
        self.warmup_policy = uniform_policy(self.action_space, self.rng)
        self.sac_policy = learner_policy(self.sac, self.action_space)
        self.step = 0
        self.episodes_started = 0
        self.record: dict[str, Any] = {
            "status": "training",
            "config": dataclasses.asdict(config),
            "sac_config": dataclasses.asdict(self.sac_config),
            "dataset_ids": dataset_ids(config.name),
            "checkpoints": [],
            "datasets": {},
            "resumed_from": [],
            "warnings": [],
        }
        self.evaluator = Evaluator(
            DatasetInfo(config.name, self.observation_space, self.action_space, env_id=config.env_id),
            episodes=config.eval_episodes,
            seed=stream_seed(config.seed, "eval"),
            env_id=config.env_id,
            device=self.device,
        )

    # -- state
    def save_state(self) -> None:
        state = {
            "version": STATE_VERSION,
            "step": self.step,
            "episodes_started": self.episodes_started,
            "record": self.record,
            "sac": self.sac.state_dict(),
            "buffer": self.buffer.state_dict(),
            "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
        }
        save_torch(state, self.directory / STATE_FILE)
        save_json(self.record, self.directory / RECORD_FILE)

    def load_state(self) -> int:
        # on CPU: RNG states must stay CPU tensors; the loads below move the rest
        state = load_torch(self.directory / STATE_FILE)
        if state.get("version") != STATE_VERSION:
            raise DatasetError(
                f"collection state {self.directory / STATE_FILE} was written by another version; "
                "start over with --overwrite"
            )
        check_same_settings(state["record"]["config"], dataclasses.asdict(self.config), self.config.name)
        self.step, self.episodes_started = int(state["step"]), int(state["episodes_started"])
        self.record = state["record"]
        self.sac.load_state_dict(state["sac"])
        self.buffer.load_state_dict(state["buffer"])
        self.rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"].cpu())
        self.record["resumed_from"].append(self.step)
        return self.step

    # -- training
    def start_episode(self) -> np.ndarray:
        observation, _ = self.env.reset(seed=stream_seed(self.config.seed, "train", self.episodes_started))
        self.episodes_started += 1
        return as_float32(observation)

    def behaviour_action(self, observation: np.ndarray) -> np.ndarray:
        policy = self.warmup_policy if self.step < self.config.warmup_steps else self.sac_policy
        return policy(observation)

    def train(self, stop_after_steps: int | None) -> bool:
        """Online SAC to ``sac_steps``.

        False if stopped early by ``stop_after_steps`` (a simulated kill: nothing saved).
        """
        config = self.config
        observation = self.start_episode()
        save_at_episode_end = False
        bar = progress_bar(
            total=config.sac_steps,
            initial=self.step,
            desc=f"SAC on {config.env_id}",
            unit="step",
            disable=not self.progress,
        )
        while self.step < config.sac_steps:
            if stop_after_steps is not None and self.step >= stop_after_steps:
                bar.close()
                return False
            action = self.behaviour_action(observation)
            next_observation, reward, terminated, truncated, _ = self.env.step(action)
            next_observation = as_float32(next_observation)
            self.buffer.add(observation, action, float(reward), next_observation, terminated, truncated)
            self.step += 1
            if self.step > config.warmup_steps:
                self.sac.update(self.buffer.sample(config.batch_size))
            if self.step % config.checkpoint_every == 0 or self.step == config.sac_steps:
                self.checkpoint_policy(bar)
                save_at_episode_end = True
            observation = next_observation
            if terminated or truncated:
                # between episodes: a resume resets the same next episode, so it replays exactly
                if save_at_episode_end:
                    self.save_state()
                    save_at_episode_end = False
                observation = self.start_episode()
            bar.update(1)
        bar.close()
        self.record["status"] = "writing datasets"
        self.save_state()
        return True

    def checkpoint_policy(self, bar: ProgressBar) -> None:
        result = self.evaluator(lambda observations: self.sac.act(observations, deterministic=False), step=self.step)
        relative_path = f"policies/step-{self.step:09d}.pt"
        save_torch(
            {
                "step": self.step,
                "env_id": self.config.env_id,
                "return_mean": result.return_mean,
                "sac_config": dataclasses.asdict(self.sac_config),
                "obs_dim": self.buffer.tensors["observations"].shape[1],
                "action_low": self.action_space.low.tolist(),
                "action_high": self.action_space.high.tolist(),
                "total_updates": self.total_updates,
                "state": self.sac.state_dict(),
            },
            self.directory / relative_path,
        )
        self.record["checkpoints"] = [c for c in self.record["checkpoints"] if c["step"] < self.step]
        self.record["checkpoints"].append(
            {
                "step": self.step,
                "return_mean": result.return_mean,
                "return_std": result.return_std,
                "path": relative_path,
            }
        )
        bar.set_postfix(eval_return=f"{result.return_mean:.1f}")

    def close(self) -> None:
        self.evaluator.close()
        self.env.close()
