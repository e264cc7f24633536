"""`mbrl quickstart`: does a model help on the embedded dataset? One small compare, start to finish.

The embedded dataset (:mod:`workflows.embedded`) is 5,000 transitions of
Pendulum-v1 under random torques: a model of its three smooth dimensions is
learnt from that little data, while the behaviour-regularized model-free
learners stay close to the random behaviour.
"""

from __future__ import annotations

import argparse

from workflows.commands.compare import add_grid_arguments, check_seed_count, run_grid
from workflows.commands.train import parse_run_overrides
from workflows.compare import CompareSpec
from workflows.embedded import build_default_dataset

HELP = (
    "build the embedded dataset, pretrain its dynamics model and compare "
    "model-based vs model-free learners (small budget)"
)

ALGOS = ["mopo", "iql", "td3bc", "bc"]
STEPS = 5000
# Three seeds: the fewest at which the report prints an interval on the model-based vs model-free gap.
SEEDS = 3
WORKERS = 2
# Budget: two workers on two cores. Five evaluations of 5 episodes give the learning
# curves. The dynamics model stops at 50 epochs (the configs/dynamics.yaml cap of 400
# would cost minutes on this deterministic system, whose holdout error keeps falling
# slowly); a later `mbrl train mopo` reuses it with the same --set dynamics.max_epochs=50.
OVERRIDES = ["trainer.eval_every=1000", "trainer.eval_episodes=5", "dynamics.max_epochs=50"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--name",
        default=None,
        help="compare folder name (default: quickstart, or quickstart-<N>steps with --steps N; re-running resumes it)",
    )
    add_grid_arguments(parser, steps=STEPS, seeds=SEEDS, algos=ALGOS, workers=WORKERS)


def run(args: argparse.Namespace) -> int:
    check_seed_count(args.seeds)
    overrides = parse_run_overrides([*OVERRIDES, *args.overrides])  # refused before the dataset is written
    spec = CompareSpec(
        name=args.name or ("quickstart" if args.steps == STEPS else f"quickstart-{args.steps}steps"),
        datasets=(build_default_dataset(),),
        algos=tuple(args.algos),
        seeds=tuple(range(args.seeds)),
        steps=args.steps,
        overrides=overrides,
    )
    return run_grid(spec, args)
