"""The embedded default dataset: InvertedPendulum-v5 under a noisy scripted controller.

Built offline in seconds, it is what ``mbrl quickstart`` and the tests train on.
A linear state-feedback controller balances the pole for the whole 1000-step
episode; Gaussian action noise of a scale drawn per episode makes some episodes
fail early, so the data mixes good and poor behaviour (a "medium-replay"-like
dataset). ``ref_max_score`` is the noiseless controller's return (1000, the
episode cap) and ``ref_min_score`` the mean return of uniformly random actions.
"""

from __future__ import annotations

import gymnasium as gym
import minari
import numpy as np

from mbrl_core.minari_writer import write_minari_dataset

ENV_ID = "InvertedPendulum-v5"
DEFAULT_DATASET_ID = "mbrl/invertedpendulum/noisy-v0"
CONTROLLER_GAINS = np.array([1.0, 20.0, 2.0, 2.0])
NOISE_RANGE = (1.0, 3.5)


def controller_action(
    observation: np.ndarray, noise_scale: float, rng: np.random.Generator, low: float, high: float
) -> np.ndarray:
    action = CONTROLLER_GAINS @ observation + noise_scale * rng.standard_normal()
    return np.clip(np.array([action], dtype=np.float32), low, high)


def run_episode(
    env: gym.Env, seed: int, rng: np.random.Generator, noise_scale: float | None, max_steps: int
) -> dict[str, np.ndarray]:
    """One episode; ``noise_scale=None`` means uniformly random actions."""
    observation, _ = env.reset(seed=seed)
    low, high = float(env.action_space.low[0]), float(env.action_space.high[0])
    observations, actions, rewards, terminations, truncations = [observation], [], [], [], []
    for step in range(max_steps):
        if noise_scale is None:
            action = rng.uniform(low, high, size=1).astype(np.float32)
        else:
            action = controller_action(observation, noise_scale, rng, low, high)
        observation, reward, terminated, truncated, _ = env.step(action)
        truncated = truncated or step == max_steps - 1
        observations.append(observation)
        actions.append(action)
        rewards.append(reward)
        terminations.append(terminated)
        truncations.append(truncated)
        if terminated or truncated:
            break
    return {
        "observations": np.array(observations),
        "actions": np.array(actions),
        "rewards": np.array(rewards, dtype=np.float64),
        "terminations": np.array(terminations),
        "truncations": np.array(truncations),
    }


def reference_scores(seed: int = 10_000, episodes: int = 20) -> tuple[float, float]:
    """(random policy mean return, noiseless controller return)."""
    env = gym.make(ENV_ID)
    rng = np.random.default_rng(seed)
    random_returns = [run_episode(env, seed + i, rng, None, 1000)["rewards"].sum() for i in range(episodes)]
    expert_return = run_episode(env, seed, rng, 0.0, 1000)["rewards"].sum()
    env.close()
    return float(np.mean(random_returns)), float(expert_return)


def collect_episodes(transitions: int, seed: int = 0, max_steps: int = 1000) -> list[dict[str, np.ndarray]]:
    env = gym.make(ENV_ID)
    rng = np.random.default_rng(seed)
    episodes, total = [], 0
    while total < transitions:
        noise = float(rng.uniform(*NOISE_RANGE))
        episode = run_episode(env, seed * 100_003 + len(episodes), rng, noise, min(max_steps, transitions - total))
        episodes.append(episode)
        total += len(episode["actions"])
    env.close()
    return episodes


def build_default_dataset(
    dataset_id: str = DEFAULT_DATASET_ID, transitions: int = 20_000, seed: int = 0, overwrite: bool = False
) -> str:
    """Write the embedded dataset to the local Minari root (if missing) and return its id."""

    if dataset_id in minari.list_local_datasets() and not overwrite:
        return dataset_id
    ref_min, ref_max = reference_scores()
    write_minari_dataset(
        dataset_id,
        collect_episodes(transitions, seed=seed),
        env_id=ENV_ID,
        ref_min_score=ref_min,
        ref_max_score=ref_max,
        algorithm_name="noisy-linear-controller",
        description=(
            f"{ENV_ID} under a linear controller (gains {CONTROLLER_GAINS.tolist()}) with Gaussian action noise, "
            f"scale uniform in {list(NOISE_RANGE)} per episode; {transitions} transitions, seed {seed}."
        ),
        overwrite=overwrite,
    )
    return dataset_id
