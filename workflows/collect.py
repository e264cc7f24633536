"""D4RL-style dataset collection: train a behaviour policy online, then log it.

The recipe follows D4RL (Fu et al. 2020, "Datasets"): an online SAC agent is
trained for ``sac_steps`` environment steps (one update per step after
``warmup_steps`` uniformly random ones), with a policy checkpoint evaluated
every ``checkpoint_every`` steps. After training:

- ``random``:        uniformly random actions;
- ``expert``:        the final policy, actions sampled from it (stochastic);
- ``medium``:        the first checkpoint whose evaluated return reaches
                     ``medium_fraction`` of the way from the random policy's
                     return to the expert's (1/3 by default; measured on this
                     normalized scale so negative-reward tasks work too);
- ``medium-replay``: every transition of the online replay buffer up to the
                     medium checkpoint's step (warm-up steps included);
- ``medium-expert``: the medium episodes followed by the expert episodes.

Each dataset records ``ref_min_score`` (the random policy's mean return) and
``ref_max_score`` (the expert's), a description of every choice, and a
``collection.json`` beside its ``data/`` folder. Everything else lives in
``<minari root>/<name>/collection/``: the behaviour-policy checkpoints, the
resume state and the collection record. Minari ignores that folder (it has no
``data/``).

Resuming is exact on CPU: training state is saved at the first episode end
after each checkpoint, and every episode's reset seed is derived from the run
seed and the episode's number, so a resumed collection replays exactly what an
uninterrupted one would have done.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import minari
import numpy as np
import torch
from tqdm.auto import tqdm

from mbrl_core.atomic import load_torch, save_json, save_torch
from mbrl_core.batch import Batch
from mbrl_core.config import build_config
from mbrl_core.data import DatasetInfo, local_datasets_root
from mbrl_core.device import select_device
from mbrl_core.errors import ConfigError, DatasetError
from mbrl_core.evaluation import Evaluator
from mbrl_core.learner import LearnerContext
from mbrl_core.minari_writer import write_minari_dataset
from mbrl_core.normalization import Normalizer
from mbrl_core.seeding import make_generator, seed_everything
from policies.sac import SAC, SACConfig

DATASET_KINDS = ("random", "medium", "expert", "medium-replay", "medium-expert")
SEED_STREAMS = {"train": 0, "eval": 1, "random": 2, "medium": 3, "expert": 4}
STATE_FILE = "state.pt"
RECORD_FILE = "collection.json"
STATE_VERSION = 1

Policy = Callable[[np.ndarray], np.ndarray]


@dataclass
class CollectConfig:
    env_id: str
    name: str  # Minari namespace: the datasets are <name>/<kind>-v0
    sac_steps: int = 1_000_000  # D4RL trained its SAC behaviour policies for 1M steps
    warmup_steps: int = 5000  # uniformly random actions before the first SAC update
    batch_size: int = 256
    checkpoint_every: int = 10_000
    eval_episodes: int = 10
    medium_fraction: float = 1 / 3  # D4RL: "about one third of the expert's performance"
    random_transitions: int = 1_000_000  # D4RL's sizes: 1M each (medium-expert is their union)
    medium_transitions: int = 1_000_000
    expert_transitions: int = 1_000_000
    seed: int = 0
    device: str = "auto"
    sac: dict[str, Any] = field(default_factory=dict)  # SACConfig overrides

    def __post_init__(self) -> None:
        for name in (
            "sac_steps",
            "checkpoint_every",
            "eval_episodes",
            "batch_size",
            "random_transitions",
            "medium_transitions",
            "expert_transitions",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"collect: {name} must be at least 1 (got {getattr(self, name)})")
        if not 0 <= self.warmup_steps < self.sac_steps:
            raise ConfigError(
                f"collect: warmup_steps must be in [0, sac_steps) (got {self.warmup_steps} with "
                f"sac_steps {self.sac_steps})"
            )
        if not 0.0 < self.medium_fraction <= 1.0:
            raise ConfigError(f"collect: medium_fraction must be in (0, 1] (got {self.medium_fraction})")


@dataclass
class CollectResult:
    dataset_ids: dict[str, str]
    directory: Path
    finished: bool
    resumed_from_step: int | None
    record: dict[str, Any]
    replay_buffer: ReplayBuffer | None  # None when the collection had already finished earlier


def dataset_ids(name: str) -> dict[str, str]:
    return {kind: f"{name}/{kind}-v0" for kind in DATASET_KINDS}


def collection_dir(name: str) -> Path:
    return local_datasets_root() / name / "collection"


def stream_seed(seed: int, stream: str, index: int = 0) -> int:
    """Independent seeds per purpose and episode number: resets never depend on what ran before."""
    return int(np.random.SeedSequence([seed, SEED_STREAMS[stream], index]).generate_state(1)[0] >> 1)


# --------------------------------------------------------------------------- the online replay buffer


class ReplayBuffer:
    """Every online step in preallocated tensors; a batch is an index draw and a gather."""

    FIELDS = ("observations", "actions", "rewards", "next_observations", "terminated", "truncated")

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device, seed: int) -> None:
        shapes = {"observations": (obs_dim,), "actions": (act_dim,), "next_observations": (obs_dim,)}
        self.tensors = {name: torch.zeros((capacity, *shapes.get(name, ())), device=device) for name in self.FIELDS}
        self.size = 0
        self.generator = make_generator(seed, device)

    def add(self, observation, action, reward: float, next_observation, terminated: bool, truncated: bool) -> None:
        row = (observation, action, reward, next_observation, float(terminated), float(truncated))
        for name, value in zip(self.FIELDS, row):
            self.tensors[name][self.size] = torch.as_tensor(value, dtype=torch.float32)
        self.size += 1

    def sample(self, batch_size: int) -> Batch:
        index = torch.randint(self.size, (batch_size,), device=self.generator.device, generator=self.generator)
        rows = {name: tensor[index] for name, tensor in self.tensors.items()}
        # only terminations stop bootstrapping; a time-limit truncation does not
        return Batch(
            rows["observations"], rows["actions"], rows["rewards"], rows["next_observations"], rows["terminated"]
        )

    def episodes(self, end: int) -> list[dict[str, np.ndarray]]:
        """Rows ``[0, end)`` as Minari episodes; an episode cut at ``end`` is marked truncated."""
        rows = {name: tensor[:end].cpu().numpy() for name, tensor in self.tensors.items()}
        done = (rows["terminated"] + rows["truncated"]) > 0
        ends = np.r_[np.flatnonzero(done[:-1]), end - 1]
        episodes, start = [], 0
        for last in ends:
            span = slice(start, last + 1)
            truncations = rows["truncated"][span] > 0
            truncations[-1] |= not rows["terminated"][last]
            episodes.append(
                {
                    "observations": np.concatenate(
                        [rows["observations"][span], rows["next_observations"][last : last + 1]]
                    ),
                    "actions": rows["actions"][span],
                    "rewards": rows["rewards"][span].astype(np.float64),
                    "terminations": rows["terminated"][span] > 0,
                    "truncations": truncations,
                }
            )
            start = last + 1
        return episodes

    def state_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "generator": self.generator.get_state(),
            "rows": {name: t[: self.size].cpu() for name, t in self.tensors.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.size = int(state["size"])
        for name, rows in state["rows"].items():
            self.tensors[name][: self.size] = rows.to(self.tensors[name].device)
        self.generator.set_state(state["generator"])


# --------------------------------------------------------------------------- episodes


def run_episode(env: gym.Env, policy: Policy, seed: int, max_steps: int) -> dict[str, np.ndarray]:
    """One episode (at most ``max_steps``; a cut episode ends truncated, like D4RL's timeouts)."""
    observation, _ = env.reset(seed=seed)
    observations, actions, rewards, terminations, truncations = [np.float32(observation)], [], [], [], []
    for number in range(max_steps):
        action = policy(observations[-1])
        observation, reward, terminated, truncated, _ = env.step(action)
        observations.append(np.float32(observation))
        actions.append(action)
        rewards.append(float(reward))
        terminations.append(bool(terminated))
        truncations.append(bool(truncated) or (number == max_steps - 1 and not terminated))
        if terminations[-1] or truncations[-1]:
            break
    return {
        "observations": np.array(observations),
        "actions": np.array(actions, dtype=np.float32),
        "rewards": np.array(rewards),
        "terminations": np.array(terminations),
        "truncations": np.array(truncations),
    }


def uniform_policy(space: gym.spaces.Box, rng: np.random.Generator) -> Policy:
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    return lambda observation: rng.uniform(low, high).astype(np.float32)


def learner_policy(learner, space: gym.spaces.Box) -> Policy:
    """Stochastic actions of a SAC learner for one numpy observation (D4RL sampled its behaviour policies)."""
    return lambda observation: np.clip(
        learner.act(torch.as_tensor(observation), deterministic=False).cpu().numpy(), space.low, space.high
    )


# --------------------------------------------------------------------------- behaviour policies


def online_context(env: gym.Env, total_updates: int, device: torch.device) -> LearnerContext:
    """Online there is no dataset to fit a normalizer on: observations enter SAC unscaled (as in the SAC paper)."""
    obs_dim = int(np.prod(env.observation_space.shape))
    return LearnerContext(
        obs_dim=obs_dim,
        act_dim=int(np.prod(env.action_space.shape)),
        action_low=torch.as_tensor(env.action_space.low, dtype=torch.float32, device=device).reshape(-1),
        action_high=torch.as_tensor(env.action_space.high, dtype=torch.float32, device=device).reshape(-1),
        observation_normalizer=Normalizer.identity(obs_dim).to(device),
        total_steps=total_updates,
        device=device,
    )


def load_behaviour_policy(path: str | Path, device: torch.device | str = "cpu"):
    """A SAC learner from a checkpoint in ``<name>/collection/policies/``; use ``act(obs, deterministic=False)``."""
    checkpoint = load_torch(Path(path), map_location=device)
    sac_cls, config_cls = SAC, SACConfig
    low, high = (
        torch.tensor(checkpoint[name], dtype=torch.float32, device=device) for name in ("action_low", "action_high")
    )
    context = LearnerContext(
        obs_dim=checkpoint["obs_dim"],
        act_dim=low.numel(),
        action_low=low,
        action_high=high,
        observation_normalizer=Normalizer.identity(checkpoint["obs_dim"]).to(device),
        total_steps=checkpoint["total_updates"],
        device=torch.device(device),
    )
    learner = sac_cls(config_cls(**checkpoint["sac_config"]), context)
    learner.load_state_dict(checkpoint["state"])
    return learner


# --------------------------------------------------------------------------- the collection


class Collection:
    """One collection run: online SAC training with checkpoints, then the five datasets."""

    def __init__(self, config: CollectConfig, progress: bool) -> None:
        self.config = config
        self.progress = progress
        self.directory = collection_dir(config.name)
        self.ids = dataset_ids(config.name)
        self.device = select_device(config.device)
        self.env = make_env(config.env_id)
        self.total_updates = config.sac_steps - config.warmup_steps
        sac_cls, config_cls = SAC, SACConfig
        self.sac_config = build_config(config_cls, config.sac, "collect.sac")
        seed_everything(config.seed)  # the networks' initial weights
        self.sac = sac_cls(self.sac_config, online_context(self.env, self.total_updates, self.device))
        obs_dim, act_dim = (int(np.prod(space.shape)) for space in (self.env.observation_space, self.env.action_space))
        self.buffer = ReplayBuffer(config.sac_steps, obs_dim, act_dim, self.device, stream_seed(config.seed, "train"))
        self.rng = np.random.default_rng(stream_seed(config.seed, "train"))
        self.warmup_policy = uniform_policy(self.env.action_space, self.rng)
        self.sac_policy = learner_policy(self.sac, self.env.action_space)
        self.step = 0
        self.episodes_started = 0
        self.record: dict[str, Any] = {
            "status": "training",
            "config": dataclasses.asdict(config),
            "sac_config": dataclasses.asdict(self.sac_config),
            "dataset_ids": self.ids,
            "checkpoints": [],
            "datasets": {},
            "resumed_from": [],
            "warnings": [],
        }
        self.evaluator = Evaluator(
            self.env_info(),
            episodes=config.eval_episodes,
            seed=stream_seed(config.seed, "eval"),
            env_id=config.env_id,
            device=self.device,
        )

    def env_info(self) -> DatasetInfo:
        return DatasetInfo(
            self.config.name, self.env.observation_space, self.env.action_space, env_id=self.config.env_id
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
        state = load_torch(
            self.directory / STATE_FILE
        )  # on CPU: RNG states must stay CPU tensors; the loads below move the rest
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
        return np.float32(observation)

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
        bar = tqdm(
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
            next_observation = np.float32(next_observation)
            self.buffer.add(observation, action, float(reward), next_observation, terminated, truncated)
            self.step += 1
            if self.step > config.warmup_steps:
                self.sac.update(self.buffer.sample(config.batch_size))
            if self.step % config.checkpoint_every == 0 or self.step == config.sac_steps:
                self.checkpoint_policy(bar)
                save_at_episode_end = True
            observation = next_observation
            if terminated or truncated:
                if (
                    save_at_episode_end
                ):  # between episodes: a resume resets the same next episode, so it replays exactly
                    self.save_state()
                    save_at_episode_end = False
                observation = self.start_episode()
            bar.update(1)
        bar.close()
        self.record["status"] = "writing datasets"
        self.save_state()
        return True

    def checkpoint_policy(self, bar) -> None:
        result = self.evaluator(lambda observations: self.sac.act(observations, deterministic=False), step=self.step)
        relative_path = f"policies/step-{self.step:09d}.pt"
        save_torch(
            {
                "step": self.step,
                "env_id": self.config.env_id,
                "return_mean": result.return_mean,
                "sac_config": dataclasses.asdict(self.sac_config),
                "obs_dim": self.buffer.tensors["observations"].shape[1],
                "action_low": self.env.action_space.low.tolist(),
                "action_high": self.env.action_space.high.tolist(),
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

    # -- references and the medium checkpoint
    def set_references(self) -> None:
        if "ref_min_score" in self.record:
            return
        low, high = (
            torch.as_tensor(bound, dtype=torch.float32)
            for bound in (self.env.action_space.low, self.env.action_space.high)
        )
        generator = make_generator(stream_seed(self.config.seed, "random"))

        def uniform(observations):
            return low + (high - low) * torch.rand(observations.shape[0], low.numel(), generator=generator)

        self.record["ref_min_score"] = self.evaluator(uniform).return_mean
        self.record["ref_max_score"] = self.record["checkpoints"][-1]["return_mean"]
        self.record["medium"] = choose_medium(
            self.record["checkpoints"],
            self.record["ref_min_score"],
            self.record["ref_max_score"],
            self.config.medium_fraction,
        )
        self.record["warnings"] += behaviour_warnings(self.record, self.config.medium_fraction)

    # -- datasets
    def write_datasets(self) -> None:
        medium_step = self.record["medium"]["step"]
        for kind in DATASET_KINDS:
            if kind in self.record["datasets"]:
                continue
            episodes, behaviour = self.episodes_for(kind, medium_step)
            self.write_dataset(kind, episodes, behaviour)
            self.save_state()

    def episodes_for(self, kind: str, medium_step: int) -> tuple[list[dict[str, np.ndarray]], str]:
        config = self.config
        if kind == "random":
            policy = uniform_policy(self.env.action_space, np.random.default_rng(stream_seed(config.seed, "random")))
            return self.rollouts(kind, policy, config.random_transitions), "uniformly random actions"
        if kind in ("medium", "expert"):
            checkpoint = self.record["medium"] if kind == "medium" else self.record["checkpoints"][-1]
            seed_everything(stream_seed(config.seed, kind))  # the policy's action samples
            learner = load_behaviour_policy(self.directory / checkpoint["path"], self.device)
            transitions = config.medium_transitions if kind == "medium" else config.expert_transitions
            described = (
                f"SAC checkpoint at step {checkpoint['step']} (evaluated return {checkpoint['return_mean']:.4g}), "
                "actions sampled from the policy"
            )
            return self.rollouts(kind, learner_policy(learner, self.env.action_space), transitions), described
        if kind == "medium-replay":
            return self.buffer.episodes(
                medium_step
            ), f"the online SAC replay buffer up to step {medium_step} (warm-up included)"
        return read_episodes(self.ids["medium"]) + read_episodes(
            self.ids["expert"]
        ), "the medium episodes followed by the expert episodes"

    def rollouts(self, kind: str, policy: Policy, transitions: int) -> list[dict[str, np.ndarray]]:
        episodes, total = [], 0
        with tqdm(total=transitions, desc=f"{kind} data", unit="step", disable=not self.progress) as bar:
            while total < transitions:
                episode = run_episode(
                    self.env, policy, stream_seed(self.config.seed, kind, len(episodes)), transitions - total
                )
                episodes.append(episode)
                total += len(episode["actions"])
                bar.update(len(episode["actions"]))
        return episodes

    def write_dataset(self, kind: str, episodes: list[dict[str, np.ndarray]], behaviour: str) -> None:
        dataset_id = self.ids[kind]
        shutil.rmtree(local_datasets_root() / dataset_id, ignore_errors=True)  # a write killed half-way
        transitions = int(sum(len(episode["actions"]) for episode in episodes))
        write_minari_dataset(
            dataset_id,
            episodes,
            env_id=self.config.env_id,
            ref_min_score=self.record["ref_min_score"],
            ref_max_score=self.record["ref_max_score"],
            algorithm_name=f"mbrl collect ({'uniform random' if kind == 'random' else 'SAC'})",
            description=self.describe(kind, behaviour, transitions, len(episodes)),
        )
        entry = {
            "dataset_id": dataset_id,
            "transitions": transitions,
            "episodes": len(episodes),
            "behaviour": behaviour,
        }
        self.record["datasets"][kind] = entry
        save_json({**entry, "kind": kind, "collection": self.record}, local_datasets_root() / dataset_id / RECORD_FILE)

    def describe(self, kind: str, behaviour: str, transitions: int, episodes: int) -> str:
        c, medium = self.config, self.record["medium"]
        return (
            f"D4RL-style '{kind}' dataset of {c.env_id}: {transitions} transitions in {episodes} "
            f"episodes; behaviour: {behaviour}. "
            f"Behaviour policy: online SAC for {c.sac_steps} environment steps ({c.warmup_steps} "
            f"uniformly random warm-up steps, batch {c.batch_size}, "
            f"SAC settings {dataclasses.asdict(self.sac_config)}), seed {c.seed}, a policy checkpoint "
            f"evaluated ({c.eval_episodes} episodes, "
            f"stochastic actions) every {c.checkpoint_every} steps, kept in "
            f"{c.name}/collection/policies under the Minari datasets root. "
            f"Medium = first checkpoint reaching {c.medium_fraction:.4g} of the random-to-expert "
            f"return range: step {medium['step']} "
            f"(return {medium['return_mean']:.4g}). ref_min_score = uniformly random actions "
            f"({c.eval_episodes} episodes), "
            f"ref_max_score = the final SAC policy's evaluated return. Full record: {RECORD_FILE} beside the dataset."
        )

    def close(self) -> None:
        self.evaluator.close()
        self.env.close()


def choose_medium(checkpoints: list[dict[str, Any]], ref_min: float, ref_max: float, fraction: float) -> dict[str, Any]:
    """The first checkpoint whose return reaches ``ref_min + fraction (ref_max - ref_min)``.

    The final one if none does.
    """
    threshold = ref_min + fraction * (ref_max - ref_min)
    chosen = next((checkpoint for checkpoint in checkpoints if checkpoint["return_mean"] >= threshold), checkpoints[-1])
    return {**chosen, "threshold": threshold}


def behaviour_warnings(record: dict[str, Any], fraction: float) -> list[str]:
    """What makes the datasets less D4RL-like than asked: no learning, or no checkpoint near the medium level."""
    ref_min, ref_max, medium, final = (
        record["ref_min_score"],
        record["ref_max_score"],
        record["medium"],
        record["checkpoints"][-1],
    )
    found = []
    if ref_max <= ref_min:
        found.append(
            f"the final SAC policy (return {ref_max:.4g}) is no better than random ({ref_min:.4g}): "
            "train longer (--sac-steps); normalized scores of these datasets are meaningless"
        )
    if medium["step"] == final["step"]:
        found.append(
            "no checkpoint before the last reached the medium threshold: medium uses the final "
            "policy (checkpoint more often)"
        )
    elif ref_max > ref_min and (medium["return_mean"] - ref_min) / (ref_max - ref_min) > 2 * fraction:
        found.append(
            f"the medium checkpoint (step {medium['step']}, return {medium['return_mean']:.4g}) is "
            f"far above the threshold {medium['threshold']:.4g}: "
            "the policy improved between two checkpoints (checkpoint more often)"
        )
    return found


def read_episodes(dataset_id: str) -> list[dict[str, np.ndarray]]:
    fields = ("observations", "actions", "rewards", "terminations", "truncations")
    return [
        {name: getattr(episode, name) for name in fields}
        for episode in minari.load_dataset(dataset_id).iterate_episodes()
    ]


def make_env(env_id: str) -> gym.Env:
    try:
        env = gym.make(env_id)
    except gym.error.Error as error:
        raise ConfigError(f"cannot create environment '{env_id}': {error}") from error
    for what, space in (("observation", env.observation_space), ("action", env.action_space)):
        if not isinstance(space, gym.spaces.Box):
            raise ConfigError(
                f"environment '{env_id}': {what} space {type(space).__name__} is not supported (only "
                "continuous Box spaces are)"
            )
    if env.spec is None or env.spec.max_episode_steps is None:
        raise ConfigError(
            f"environment '{env_id}' has no time limit; register it with max_episode_steps so episodes end"
        )
    return env


def check_same_settings(saved: dict[str, Any], requested: dict[str, Any], name: str) -> None:
    changed = [key for key in saved if key != "device" and saved[key] != requested.get(key)]
    if changed:
        detail = ", ".join(f"{key}: {saved[key]!r} then, {requested.get(key)!r} now" for key in changed)
        raise ConfigError(
            f"collection '{name}' was started with other settings ({detail}); resume with the same "
            "ones, or pass --overwrite to start over"
        )


def check_name(name: str) -> None:
    from minari.dataset.minari_dataset import parse_dataset_id

    try:
        parse_dataset_id(f"{name}/random-v0")
    except ValueError as error:
        raise ConfigError(
            f"collect: '{name}' cannot name Minari datasets (use letters, digits, '-', '_' and '/', "
            "at least 2 characters)"
        ) from error


# --------------------------------------------------------------------------- entry point


def collect(
    config: CollectConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    stop_after_steps: int | None = None,
) -> CollectResult:
    """Train the behaviour policy and write the five datasets; see the module docstring.

    ``resume`` continues a collection of the same name from its last saved
    state; ``overwrite`` deletes an earlier one first. ``stop_after_steps``
    stops training after that many environment steps without saving anything,
    as a kill would (for tests).
    """
    check_name(config.name)
    directory = collection_dir(config.name)
    prepare(config, directory, resume, overwrite)
    if resume and not (directory / STATE_FILE).exists() and (directory / RECORD_FILE).exists():
        return finished_result(config, directory)
    collection = Collection(config, progress)
    try:
        resumed_from = collection.load_state() if (directory / STATE_FILE).exists() else None
        if collection.record["status"] == "training":
            if resumed_from is None:
                collection.save_state()  # step 0: the collection exists from now on
            if not collection.train(stop_after_steps):
                return CollectResult(
                    collection.ids, directory, False, resumed_from, collection.record, collection.buffer
                )
        collection.set_references()
        collection.write_datasets()
        collection.record["status"] = "finished"
        save_json(collection.record, directory / RECORD_FILE)
        (directory / STATE_FILE).unlink()  # the replay buffer lives on in medium-replay; the policies stay
        return CollectResult(collection.ids, directory, True, resumed_from, collection.record, collection.buffer)
    finally:
        collection.close()


def prepare(config: CollectConfig, directory: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to mix with an earlier collection or foreign datasets unless asked to resume or overwrite."""
    root = local_datasets_root()
    existing = [dataset_id for dataset_id in dataset_ids(config.name).values() if (root / dataset_id).exists()]
    if overwrite:
        for dataset_id in existing:
            shutil.rmtree(root / dataset_id)
        shutil.rmtree(directory, ignore_errors=True)
        return
    if (directory / RECORD_FILE).exists() and not resume:
        state = "is complete" if read_record(directory).get("status") == "finished" else "was started"
        raise ConfigError(
            f"collection '{config.name}' {state} in {directory}; pass --resume to continue it or "
            "--overwrite to start over"
        )
    if existing and not directory.exists():
        raise ConfigError(
            f"datasets {', '.join(existing)} already exist and were not made by a collection here; "
            "pass --overwrite to replace them"
        )


def read_record(directory: Path) -> dict[str, Any]:
    try:
        return json.loads((directory / RECORD_FILE).read_text())
    except (OSError, ValueError) as error:
        raise DatasetError(
            f"collection record {directory / RECORD_FILE} cannot be read ({error}); pass --overwrite to start over"
        ) from error


def finished_result(config: CollectConfig, directory: Path) -> CollectResult:
    record = read_record(directory)
    if record.get("status") != "finished":
        raise DatasetError(
            f"collection '{config.name}' in {directory} has no resume state ({STATE_FILE}); pass "
            "--overwrite to start over"
        )
    return CollectResult(dataset_ids(config.name), directory, True, None, record, None)
