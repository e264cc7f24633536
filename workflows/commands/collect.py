"""`mbrl collect`: make D4RL-style Minari datasets by training a behaviour policy online."""

from __future__ import annotations

import argparse

from mbrl_core.config import build_config, parse_overrides
from mbrl_core.errors import ConfigError
from workflows.collect import CollectConfig, collect

HELP = (
    "train an online SAC behaviour policy and write "
    "<name>/{random,medium,medium-replay,expert,medium-expert}-v0 Minari datasets"
)

# flag -> CollectConfig field; unset flags keep the config's defaults
CONFIG_FLAGS = {
    "sac_steps": "environment steps of online SAC (default 1,000,000, D4RL's)",
    "warmup_steps": "uniformly random steps before the first SAC update (default 5000)",
    "batch_size": "SAC batch size (default 256)",
    "checkpoint_every": "steps between evaluated policy checkpoints, also the resume points (default 10,000)",
    "eval_episodes": "episodes per checkpoint evaluation and for the reference scores (default 10)",
    "medium_fraction": (
        "medium = first checkpoint reaching this fraction of the random-to-expert return range (default 1/3)"
    ),
    "random_transitions": "size of random-v0 (default 1,000,000)",
    "medium_transitions": "size of medium-v0 (default 1,000,000)",
    "expert_transitions": "size of expert-v0 (default 1,000,000)",
    "seed": "seed of everything (default 0)",
}
INTEGER_FLAGS = {
    "sac_steps",
    "warmup_steps",
    "batch_size",
    "checkpoint_every",
    "eval_episodes",
    "random_transitions",
    "medium_transitions",
    "expert_transitions",
    "seed",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", required=True, help="gymnasium environment id, e.g. Hopper-v5")
    parser.add_argument(
        "--name", required=True, help="Minari namespace of the datasets, e.g. hopper -> hopper/medium-v0"
    )
    for field, text in CONFIG_FLAGS.items():
        parser.add_argument(
            f"--{field.replace('_', '-')}", dest=field, type=int if field in INTEGER_FLAGS else float, help=text
        )
    parser.add_argument(
        "--transitions", type=int, help="size of random-v0, medium-v0 and expert-v0 at once (the per-dataset flags win)"
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a SAC setting, e.g. --set actor_lr=1e-3 (repeatable)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue a killed collection of this name from its last checkpoint"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="delete an earlier collection and datasets of this name first"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    values = {field: getattr(args, field) for field in CONFIG_FLAGS if getattr(args, field) is not None}
    if args.transitions is not None:
        for field in ("random_transitions", "medium_transitions", "expert_transitions"):
            values.setdefault(field, args.transitions)
    overrides = parse_overrides(args.set)
    if set(overrides) - {"learner"}:
        raise ConfigError(
            "collect --set takes plain SAC keys (e.g. actor_lr=1e-3), not "
            f"{', '.join(sorted(set(overrides) - {'learner'}))}.*"
        )
    config = build_config(
        CollectConfig,
        {**values, "env_id": args.env, "name": args.name, "device": args.device, "sac": overrides.get("learner", {})},
        "collect",
    )
    result = collect(config, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    print(summary(result))
    return 0


def summary(result) -> str:
    record = result.record
    lines = [f"datasets ({'finished' if result.finished else 'not finished'}), record in {result.directory}:"]
    for entry in record["datasets"].values():
        lines.append(
            f"  {entry['dataset_id']:<40} {entry['transitions']:>9} transitions {entry['episodes']:>6} episodes"
        )
    lines.append(
        f"ref_min_score {record['ref_min_score']:.4g} (random), ref_max_score {record['ref_max_score']:.4g} (expert)"
    )
    lines.append(
        f"medium: checkpoint at step {record['medium']['step']} (return {record['medium']['return_mean']:.4g})"
    )
    lines += [f"warning: {text}" for text in record["warnings"]]
    lines.append(f"next: mbrl inspect {result.dataset_ids['medium']} --plot medium.png")
    return "\n".join(lines)
