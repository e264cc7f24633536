"""The embedded datasets: built offline in seconds from scripted behaviour, nothing to download.

- The default, what ``mbrl quickstart`` trains on (``DEFAULT_DATASET_ID``):
  Pendulum-v1 under uniformly random torques, ``dataset_kind`` "random". The
  dynamics are three smooth dimensions a model learns from little data, while
  random behaviour never swings the pendulum up and holds it: a learner has to
  find that itself. ``ref_min_score`` is the random policy's mean return and
  ``ref_max_score`` that of a scripted swing-up controller (energy pumping,
  then a PD hold at the top), both over 20 seeded episodes.
- The noisy InvertedPendulum-v5 dataset (what the tests train on): a linear
  state-feedback controller that balances the pole for the whole 1000-step
  episode, with Gaussian action noise of a scale drawn per episode so some
  episodes fail early. ``ref_max_score`` is the noiseless controller's return
  (1000, the episode cap), ``ref_min_score`` the mean return of random actions.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np

from mbrl_core.data import local_datasets_root
from mbrl_core.evaluation import quiet_mujoco_notices
from mbrl_core.locks import exclusive
from mbrl_core.minari_writer import write_minari_dataset

Controller = Callable[[np.ndarray, np.random.Generator], np.ndarray]
Episode = dict[str, np.ndarray]
KIND_METADATA_KEY = "dataset_kind"  # the key `mbrl collect` records the D4RL kind under
REFERENCE_SEED, REFERENCE_EPISODES = 10_000, 20
WRITE_WAIT_SECONDS = 300.0  # a second quickstart waits this long for the first to finish writing the dataset

# --------------------------------------------------------------------------- the default: Pendulum, random torques

PENDULUM_ID = "Pendulum-v1"
DEFAULT_DATASET_ID = "mbrl/pendulum/random-v0"
DEFAULT_TRANSITIONS = 5_000  # 25 episodes of 200 steps
PENDULUM_MAX_TORQUE = 2.0
# Pendulum-v1 integrates θ'' = 3g/(2l) sin θ + 3/(m l²) u with g = 10, m = l = 1 (θ = 0 upright):
# E = θ'²/2 + 15 cos θ is conserved without torque and is 15 at rest upright.
PENDULUM_UPRIGHT_ENERGY = 15.0
HOLD_ANGLE = 0.5  # radians from upright where the PD hold takes over from energy pumping
HOLD_GAINS = (10.0, 2.0)


def swing_up_action(observation: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pump energy towards the upright level, then hold with PD: the reference "expert" (≈ -155 return)."""
    cos_theta, sin_theta, velocity = (float(value) for value in observation)
    angle = np.arctan2(sin_theta, cos_theta)
    if abs(angle) < HOLD_ANGLE:
        torque = -(HOLD_GAINS[0] * angle + HOLD_GAINS[1] * velocity)
    else:
        energy = 0.5 * velocity**2 + PENDULUM_UPRIGHT_ENERGY * cos_theta
        torque = (PENDULUM_UPRIGHT_ENERGY - energy) * (1.0 if velocity >= 0 else -1.0)
    return np.clip(np.array([torque], dtype=np.float32), -PENDULUM_MAX_TORQUE, PENDULUM_MAX_TORQUE)


def build_default_dataset(
    dataset_id: str = DEFAULT_DATASET_ID, transitions: int = DEFAULT_TRANSITIONS, seed: int = 0, overwrite: bool = False
) -> str:
    """Write the quickstart's dataset to the local Minari root (if missing) and return its id.

    Its kind is written last, so a dataset without one was cut short (a quickstart killed while writing it) and
    is written again; two quickstarts at once take turns.
    """
    root = local_datasets_root()
    with exclusive(root / f".{dataset_id.replace('/', '_')}.lock", f"dataset '{dataset_id}'", WRITE_WAIT_SECONDS):
        if recorded_kind(root / dataset_id) is not None and not overwrite:
            return dataset_id
        shutil.rmtree(root / dataset_id, ignore_errors=True)
        write_default_dataset(dataset_id, transitions, seed)
    return dataset_id


def write_default_dataset(dataset_id: str, transitions: int, seed: int) -> None:
    episodes = collect(PENDULUM_ID, transitions, seed, lambda rng: uniform_action(PENDULUM_ID, rng))
    write_minari_dataset(
        dataset_id,
        episodes,
        env_id=PENDULUM_ID,
        ref_min_score=mean_return(PENDULUM_ID, lambda rng: uniform_action(PENDULUM_ID, rng)),
        ref_max_score=mean_return(PENDULUM_ID, lambda rng: swing_up_action),
        algorithm_name="uniform-random",
        description=(
            f"{PENDULUM_ID} under uniformly random torques in [-2, 2]: {transitions} transitions, seed {seed}. "
            "ref_max_score: a scripted swing-up controller (energy pumping, PD hold within "
            f"{HOLD_ANGLE} rad of upright); ref_min_score: random torques; {REFERENCE_EPISODES} episodes each."
        ),
    ).storage.update_metadata({KIND_METADATA_KEY: "random"})


def recorded_kind(dataset_dir: Path) -> str | None:
    """The ``dataset_kind`` a local dataset's metadata records; None when missing, half-written or unreadable."""
    try:
        metadata = json.loads((dataset_dir / "data" / "metadata.json").read_text())
    except (OSError, ValueError):
        return None
    kind = metadata.get(KIND_METADATA_KEY) if isinstance(metadata, dict) else None
    return kind if isinstance(kind, str) else None


# --------------------------------------------------------------------------- the tests' noisy InvertedPendulum

INVERTED_PENDULUM_ID = "InvertedPendulum-v5"
CONTROLLER_GAINS = np.array([1.0, 20.0, 2.0, 2.0])
NOISE_RANGE = (1.0, 3.5)


def controller_action(observation: np.ndarray, noise_scale: float, rng: np.random.Generator) -> np.ndarray:
    action = CONTROLLER_GAINS @ observation + noise_scale * rng.standard_normal()
    return np.clip(np.array([action], dtype=np.float32), -3.0, 3.0)


def noisy_controller(rng: np.random.Generator) -> Controller:
    """The balancing controller with this episode's noise scale."""
    noise = float(rng.uniform(*NOISE_RANGE))
    return lambda observation, rng: controller_action(observation, noise, rng)


def build_noisy_inverted_pendulum(
    dataset_id: str = "mbrl/invertedpendulum/noisy-v0",
    transitions: int = 20_000,
    seed: int = 0,
    overwrite: bool = False,
) -> str:
    """Write the noisy-controller InvertedPendulum dataset to the local Minari root (if missing); return its id."""
    if dataset_id in minari.list_local_datasets() and not overwrite:
        return dataset_id
    write_minari_dataset(
        dataset_id,
        collect_episodes(transitions, seed=seed),
        env_id=INVERTED_PENDULUM_ID,
        ref_min_score=mean_return(INVERTED_PENDULUM_ID, lambda rng: uniform_action(INVERTED_PENDULUM_ID, rng)),
        ref_max_score=mean_return(INVERTED_PENDULUM_ID, lambda rng: noiseless_controller, episodes=1),
        algorithm_name="noisy-linear-controller",
        description=(
            f"{INVERTED_PENDULUM_ID} under a linear controller (gains {CONTROLLER_GAINS.tolist()}) with Gaussian "
            f"action noise, scale uniform in {list(NOISE_RANGE)} per episode; {transitions} transitions, seed {seed}."
        ),
        overwrite=overwrite,
    )
    return dataset_id


def noiseless_controller(observation: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return controller_action(observation, 0.0, rng)


def collect_episodes(transitions: int, seed: int = 0, max_steps: int = 1000) -> list[Episode]:
    """Noisy-controller InvertedPendulum episodes (the tests also build datasets of their own from these)."""
    return collect(INVERTED_PENDULUM_ID, transitions, seed, noisy_controller, max_steps)


# --------------------------------------------------------------------------- shared


def uniform_action(env_id: str, rng: np.random.Generator) -> Controller:
    high = PENDULUM_MAX_TORQUE if env_id == PENDULUM_ID else 3.0
    return lambda observation, rng: rng.uniform(-high, high, size=1).astype(np.float32)


def run_episode(env: gym.Env, seed: int, rng: np.random.Generator, controller: Controller, max_steps: int) -> Episode:
    """One episode of ``controller``; one cut at ``max_steps`` ends truncated."""
    observation, _ = env.reset(seed=seed)
    observations, actions, rewards, terminations, truncations = [observation], [], [], [], []
    for step in range(max_steps):
        action = controller(observation, rng)
        observation, reward, terminated, truncated, _ = env.step(action)
        observations.append(observation)
        actions.append(action)
        rewards.append(reward)
        terminations.append(terminated)
        truncations.append(truncated or step == max_steps - 1)
        if terminated or truncations[-1]:
            break
    return {
        "observations": np.array(observations),
        "actions": np.array(actions),
        "rewards": np.array(rewards, dtype=np.float64),
        "terminations": np.array(terminations),
        "truncations": np.array(truncations),
    }


def collect(
    env_id: str,
    transitions: int,
    seed: int,
    controller_for_episode: Callable[[np.random.Generator], Controller],
    max_steps: int = 1000,
) -> list[Episode]:
    quiet_mujoco_notices()
    env = gym.make(env_id)
    rng = np.random.default_rng(seed)
    episodes: list[Episode] = []
    total = 0
    while total < transitions:
        controller = controller_for_episode(rng)
        limit = min(max_steps, transitions - total)
        episode = run_episode(env, seed * 100_003 + len(episodes), rng, controller, limit)
        episodes.append(episode)
        total += len(episode["actions"])
    env.close()
    return episodes


def mean_return(
    env_id: str, controller_for_episode: Callable[[np.random.Generator], Controller], episodes: int = REFERENCE_EPISODES
) -> float:
    """Mean return over seeded full episodes: the reference scores."""
    quiet_mujoco_notices()
    env = gym.make(env_id)
    rng = np.random.default_rng(REFERENCE_SEED)
    returns = [
        run_episode(env, REFERENCE_SEED + number, rng, controller_for_episode(rng), 1000)["rewards"].sum()
        for number in range(episodes)
    ]
    env.close()
    return float(np.mean(returns))
