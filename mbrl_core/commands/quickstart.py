"""`mbrl quickstart`: does a model help on the embedded dataset? One small compare, start to finish."""

from __future__ import annotations

import argparse

from mbrl_core.commands.compare import add_grid_arguments

HELP = "build the embedded dataset, pretrain its dynamics model and compare model-based vs model-free learners (small budget)"

ALGOS = ["mopo", "iql", "td3bc", "bc"]
STEPS = 5000
SEEDS = 2
WORKERS = 2
# Every run evaluates on the same schedule; the dynamics model is capped so the
# whole quickstart fits in about ten minutes on two CPU cores.
OVERRIDES = ["trainer.eval_every=1000", "trainer.eval_episodes=5"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default="quickstart", help="compare folder name (default: quickstart; re-running resumes it)")
    add_grid_arguments(parser, steps=STEPS, seeds=SEEDS, algos=ALGOS, workers=WORKERS)


def run(args: argparse.Namespace) -> int:
    from mbrl_core.commands.compare import run_grid
    from mbrl_core.compare import CompareSpec
    from mbrl_core.config import parse_overrides
    from mbrl_core.embedded import build_default_dataset

    dataset_id = build_default_dataset()
    spec = CompareSpec(
        name=args.name,
        datasets=(dataset_id,),
        algos=tuple(args.algos),
        seeds=tuple(range(args.seeds)),
        steps=args.steps,
        overrides=parse_overrides([*OVERRIDES, *args.overrides]),
    )
    return run_grid(spec, args)
