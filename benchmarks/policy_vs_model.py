"""Policy vs model (a diagnosis, not a test): a trained run's real episodes, step by step, beside the
dynamics model's one-step view of the same steps.

For each real step of the run's deterministic policy it records the real reward and the model's (mean over
elites), the one-step error ||predicted next state - real next state||, the ensemble disagreement (MOReL's
HALT feature) and whether the model's termination rule fires where the real environment terminates. It tells a
model that is wrong where the policy goes (large error, or a missed termination: the model is exploited) from
a model that is right there while the policy still fails (the value function is). For learners with a Q critic
it also records the critic's value of each real step, min_e Q_e(s, π(s)), beside the discounted real return
that followed (``q_error`` = their mean difference: positive is over-estimation along the policy's own path).
Beside each real episode it also runs the policy open loop in the model from the same start state (the model's
mean prediction fed back as the next state) and records when the model's termination rule fires: a model that
falls where the real robot falls is right over many steps too, and a learner that still steers into the fall
was let down by its value estimate (e.g. rollouts too short to reach the fall).

    python benchmarks/policy_vs_model.py runs/<run> [runs/<other run> ...] --episodes 3 --out results.json

The dynamics model is the one the first model-based run used (its ``eval.json``), or ``--model KEY``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

# this file sits beside modules named like the project's packages: drop its folder from the import path
sys.path = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]

import gymnasium as gym
import torch

from dynamics.service import DynamicsService
from mbrl_core.evaluation import env_spec_for, quiet_mujoco_notices
from workflows.runs import load_policy, read_eval, run_dataset_info


def model_key(runs: list[Path], given: str | None) -> str:
    if given:
        return given
    for run in runs:
        dynamics = read_eval(run).get("dynamics") or {}
        if dynamics.get("key"):
            return str(dynamics["key"])
    sys.exit("no run used a dynamics model: pass --model KEY")


def critic_value(learner: Any, state: torch.Tensor, action: torch.Tensor) -> float | None:
    """min_e Q_e(s, a) of a learner with a Q-critic ensemble (None for BC, IQL's V-only views, ...)."""
    nets = getattr(learner, "nets", {})
    critic = nets["critic"] if "critic" in nets else None
    if critic is None or getattr(critic, "act_dim", 0) == 0:
        return None
    with torch.no_grad():
        values = critic(learner.observation_normalizer(state), learner.action_scaler.to_unit(action))
    # in the environment's reward units (IQL and CQL may learn on rewards x 1000 / return range)
    return float(values.min(dim=0).values[0]) / float(getattr(learner, "reward_scale", 1.0))


def add_returns_to_go(steps: list[dict[str, Any]], gamma: float) -> None:
    following = 0.0
    for step in reversed(steps):
        following = step["reward"] + gamma * following
        step["discounted_return"] = following


def open_loop_length(policy: Any, model: DynamicsService, start: torch.Tensor, limit: int) -> int | None:
    """Steps until the model's termination fires when the policy acts on the model's own predictions (None: never
    within ``limit``)."""
    state = start
    for step in range(1, limit + 1):
        predicted = model.predict(state, policy.act(state, deterministic=True))
        if bool(predicted.terminals[0] > 0.5):
            return step
        state = predicted.next_observations
    return None


def episode_steps(policy: Any, model: DynamicsService, env: gym.Env, seed: int) -> list[dict[str, Any]]:
    observation, _ = env.reset(seed=seed)
    steps = []
    while True:
        state = torch.as_tensor(observation, dtype=torch.float32)[None]
        action = policy.act(state, deterministic=True)
        q_value = critic_value(policy, state, action)
        predicted = model.predict(state, action)
        observation, reward, terminated, truncated, _ = env.step(action[0].numpy())
        error = torch.linalg.vector_norm(predicted.next_observations[0] - torch.as_tensor(observation)).item()
        steps.append(
            {
                "reward": float(reward),
                "model_reward": float(predicted.rewards[0]),
                "one_step_error": error,
                "disagreement": float(predicted.uncertainty["max_pairwise_disagreement"][0]),
                "model_terminal": bool(predicted.terminals[0] > 0.5),
                "terminal": bool(terminated),
                "q": q_value,
            }
        )
        if terminated or truncated:
            add_returns_to_go(steps, float(getattr(policy.config, "gamma", 0.99)))
            return steps


def q_summary(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The critic along the real path (the return after a truncation is cut short: read q_error with the length)."""
    if steps[0]["q"] is None:
        return {}
    return {
        "q_first": steps[0]["q"],
        "discounted_return_first": steps[0]["discounted_return"],
        "q_error": statistics.fmean(step["q"] - step["discounted_return"] for step in steps),
        "q_last": steps[-1]["q"],
    }


def summarize(steps: list[dict[str, Any]]) -> dict[str, Any]:
    last = steps[-1]
    return q_summary(steps) | {
        "length": len(steps),
        "return": sum(step["reward"] for step in steps),
        "model_return": sum(step["model_reward"] for step in steps),
        "mean_one_step_error": statistics.fmean(step["one_step_error"] for step in steps),
        "max_disagreement": max(step["disagreement"] for step in steps),
        "terminated": last["terminal"],
        "model_terminal_at_the_real_termination": last["model_terminal"] if last["terminal"] else None,
        "model_terminal_earlier": any(step["model_terminal"] for step in steps[:-1]),
    }


def episode_line(episode: dict[str, Any]) -> str:
    return (
        f"{episode['length']} steps (open loop in the model: {episode['model_open_loop_length'] or 'no termination'}), "
        f"return {episode['return']:.1f} (model {episode['model_return']:.1f}), "
        f"one-step error {episode['mean_one_step_error']:.3f}, max disagreement {episode['max_disagreement']:.3f}, "
        f"model terminal at the real end: {episode['model_terminal_at_the_real_termination']}"
        + (
            f", Q at the start {episode['q_first']:.1f} vs discounted return {episode['discounted_return_first']:.1f}"
            f" (mean Q error along the path {episode['q_error']:+.1f}, Q at the last step {episode['q_last']:.1f})"
            if "q_first" in episode
            else ""
        )
    )


def start_state(env: gym.Env, seed: int) -> torch.Tensor:
    observation, _ = env.reset(seed=seed)
    return torch.as_tensor(observation, dtype=torch.float32)[None]


def diagnose(run: Path, model: DynamicsService, episodes: int, keep_steps: bool = False) -> dict[str, Any]:
    policy = load_policy(run)
    env = gym.make(env_spec_for(run_dataset_info(run)))
    limit = env.spec.max_episode_steps if env.spec and env.spec.max_episode_steps else 1000
    results = []
    for seed in range(episodes):
        steps = episode_steps(policy, model, env, seed)
        in_model = open_loop_length(policy, model, start_state(env, seed), limit)
        results.append(
            summarize(steps) | {"model_open_loop_length": in_model} | ({"steps": steps} if keep_steps else {})
        )
    env.close()
    evaluation = read_eval(run)
    return {"algo": evaluation["algo"], "final_normalized_score": evaluation["final"].get("normalized_score")} | {
        "episodes": results
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished run folders (same environment)")
    parser.add_argument("--model", default=None, help="dynamics model key (default: the runs' own)")
    parser.add_argument("--store", default=None, help="dynamics store (default: MBRL_DYNAMICS_STORE or the cache)")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    parser.add_argument("--steps", action="store_true", help="keep every step's record in the JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)
    quiet_mujoco_notices()
    key = model_key(args.runs, args.model)
    model = DynamicsService.load(key, store=args.store)
    results: dict[str, Any] = {
        "command": "python benchmarks/policy_vs_model.py " + " ".join(sys.argv[1:]),
        "model": key,
        "dataset_max_disagreement": model.disagreement_stats["max"],
        "runs": {run.name: diagnose(run, model, args.episodes, args.steps) for run in args.runs},
    }
    for name, result in results["runs"].items():
        for episode in result["episodes"]:
            print(f"{name}: {episode_line(episode)}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
