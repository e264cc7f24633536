"""`mbrl compare`: a grid of learners x datasets x seeds under one budget, then the report."""

from __future__ import annotations

import argparse
import sys

from mbrl_core.errors import ConfigError
from workflows.commands.train import add_precision_argument, parse_run_overrides, with_precision
from workflows.compare import CompareSpec, default_name, run_compare, write_compare_report
from workflows.executors import EXECUTORS
from workflows.report import terminal_summary

HELP = "train learners x datasets x seeds under one budget (resumable) and write a report"


def add_grid_arguments(
    parser: argparse.ArgumentParser, steps: int | None, seeds: int, algos: list[str] | None, workers: int
) -> None:
    """The options compare and quickstart share; defaults differ."""
    parser.add_argument(
        "--algos",
        nargs="+",
        default=algos,
        required=algos is None,
        metavar="ALGO",
        help="learners to compare: mopo morel combo (model-based), cql iql awac td3bc bc sac (model-free)"
        + (f" (default: {' '.join(algos)})" if algos else ""),
    )
    parser.add_argument(
        "--seeds", type=int, default=seeds, help=f"seeds per learner and dataset: 0..N-1 (default: {seeds})"
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=steps,
        required=steps is None,
        help="gradient updates per run, the same for every learner" + (f" (default: {steps})" if steps else ""),
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=workers,
        help=f"local executor: runs trained at once, each with cores/workers torch threads (default: {workers})",
    )
    parser.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help='where runs train: local (a process pool, default) or ray (needs pip install -e ".[ray]")',
    )
    parser.add_argument(
        "--address",
        default=None,
        help="with --executor ray: the cluster to join (auto, ray://host:10001; default: start a local Ray)",
    )
    parser.add_argument(
        "--cpus-per-run",
        type=int,
        default=None,
        help="with --executor ray: CPUs each run asks Ray for, and its torch threads (default: 1)",
    )
    parser.add_argument(
        "--out",
        "--runs-dir",
        dest="out",
        default="runs",
        help="where the compare-<name> folder goes: a folder or a URL such as s3://bucket/grids (default: runs)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=(
            "config override for every run: trainer.eval_every=2000, rollouts.horizon=1, "
            "dynamics.max_epochs=50; repeatable"
        ),
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, ...")
    parser.add_argument(
        "--dynamics-store",
        default=None,
        help="dynamics artifact folder (default: MBRL_DYNAMICS_STORE or the user cache)",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no live display of the grid (on a terminal it refreshes in place; otherwise a line a minute)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--datasets", nargs="+", required=True, metavar="DATASET", help="Minari dataset ids")
    parser.add_argument(
        "--name", default=None, help="compare folder name (default: from the datasets and steps; re-running resumes it)"
    )
    add_grid_arguments(parser, steps=None, seeds=3, algos=None, workers=1)
    add_precision_argument(parser)


def run(args: argparse.Namespace) -> int:
    check_seed_count(args.seeds)
    spec = CompareSpec(
        name=args.name or default_name(args.datasets, args.steps),
        datasets=tuple(args.datasets),
        algos=tuple(args.algos),
        seeds=tuple(range(args.seeds)),
        steps=args.steps,
        overrides=parse_run_overrides(with_precision(args)),
    )
    return run_grid(spec, args)


def check_seed_count(seeds: int) -> None:
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1 (got {seeds}): it is the number of seeds, 0..N-1")


def run_grid(spec, args: argparse.Namespace) -> int:
    """Train the grid, write the report, print the summary table; exit status 1 if any run failed."""

    try:
        outcome = run_compare(
            spec,
            runs_dir=args.out,
            workers=args.workers,
            device=args.device,
            dynamics_store=args.dynamics_store,
            progress=not args.no_progress,
            executor=args.executor,
            address=args.address,
            cpus_per_run=args.cpus_per_run,
        )
    except KeyboardInterrupt:
        print(
            "interrupted: finished runs and checkpoints are kept; run the same command again to resume", file=sys.stderr
        )
        return 130
    if outcome.trained or outcome.skipped:
        data, html, markdown = write_compare_report(outcome.folder)
        print(f"\n{terminal_summary(data)}\n\nreport: {html}\n        {markdown}")
    if not outcome.failed:
        return 0
    print(f"\n{len(outcome.failed)} failed (re-run the same command to retry):")
    for name, message in outcome.failed.items():
        print(f"  {name}: {message}")
    return 1
