"""Policy vs model (a diagnosis, not a test): a trained run's real episodes, step by step, beside the
dynamics model's one-step view of the same steps.

For each real step of the run's deterministic policy it records the real reward and the model's (mean over
elites), the one-step error ||predicted next state - real next state||, the ensemble disagreement (MOReL's
HALT feature) and whether the model's termination rule fires where the real environment terminates. It tells a
model that is wrong where the policy goes (large error, or a missed termination: the model is exploited) from
a model that is right there while the policy still fails (the value function is).

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


def episode_steps(policy: Any, model: DynamicsService, env: gym.Env, seed: int) -> list[dict[str, Any]]:
    observation, _ = env.reset(seed=seed)
    steps = []
    while True:
        state = torch.as_tensor(observation, dtype=torch.float32)[None]
        action = policy.act(state, deterministic=True)
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
            }
        )
        if terminated or truncated:
            return steps


def summarize(steps: list[dict[str, Any]]) -> dict[str, Any]:
    last = steps[-1]
    return {
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
        f"{episode['length']} steps, return {episode['return']:.1f} (model {episode['model_return']:.1f}), "
        f"one-step error {episode['mean_one_step_error']:.3f}, max disagreement {episode['max_disagreement']:.3f}, "
        f"model terminal at the real end: {episode['model_terminal_at_the_real_termination']}"
    )


def diagnose(run: Path, model: DynamicsService, episodes: int) -> dict[str, Any]:
    policy = load_policy(run)
    env = gym.make(env_spec_for(run_dataset_info(run)))
    results = [summarize(episode_steps(policy, model, env, seed)) for seed in range(episodes)]
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
    args = parser.parse_args()
    torch.set_num_threads(1)
    quiet_mujoco_notices()
    key = model_key(args.runs, args.model)
    model = DynamicsService.load(key, store=args.store)
    results: dict[str, Any] = {
        "command": "python benchmarks/policy_vs_model.py " + " ".join(sys.argv[1:]),
        "model": key,
        "dataset_max_disagreement": model.disagreement_stats["max"],
        "runs": {run.name: diagnose(run, model, args.episodes) for run in args.runs},
    }
    for name, result in results["runs"].items():
        for episode in result["episodes"]:
            print(f"{name}: {episode_line(episode)}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
