"""`mbrl eval`: re-evaluate a saved policy."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mbrl_core.atomic import save_json
from mbrl_core.evaluation import Evaluator
from mbrl_core.storage import is_url, locate
from workflows.remote_runs import readable_copy
from workflows.runs import load_policy, run_dataset_info

HELP = "re-evaluate a run's saved policy in its environment"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a run folder, e.g. runs/iql-... or s3://bucket/runs/iql-...")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="episode i is reset with seed + i")
    parser.add_argument("--env", default=None, help="evaluate in this gymnasium env id instead of the dataset's")
    parser.add_argument("--device", default="cpu")


def run(args: argparse.Namespace) -> int:
    with readable_copy(args.run_dir, keep=needed_to_evaluate) as run_dir:
        policy = load_policy(run_dir, device=args.device)
        evaluator = Evaluator(
            run_dataset_info(run_dir), args.episodes, seed=args.seed, env_id=args.env, device=args.device
        )
        try:
            result = evaluator(policy.act)
        finally:
            evaluator.close()
        name = f"reeval-{time.strftime('%Y%m%d-%H%M%S')}.json"
        save_json(vars(result) | {"env": args.env, "seed": args.seed}, run_dir / name)
        out: str | Path = run_dir / name
        if is_url(args.run_dir):
            out = locate(args.run_dir).child(name).url
            locate(out).upload(run_dir / name)
    score = (
        f", normalized score {result.normalized_score:.1f}"
        if result.normalized_score is not None
        else " (no reference scores)"
    )
    print(f"{args.episodes} episodes: return {result.return_mean:.1f} ± {result.return_std:.1f}{score}\nwritten {out}")
    return 0


def needed_to_evaluate(relative: str) -> bool:
    """The files of a run that evaluating its policy reads (what is downloaded from a store)."""
    return relative in ("config.yaml", "context.pt", "checkpoints/last.pt")
