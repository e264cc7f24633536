"""`mbrl inspect <minari-id>`: what a dataset holds, as a table, JSON or a plot."""

from __future__ import annotations

import argparse

from workflows.dataset_report import format_report, inspect_dataset, plot_report

HELP = (
    "report what a Minari dataset holds (sizes, returns, per-dimension statistics, problems), optionally as a PNG plot"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset_id", help="Minari dataset id (local, or downloadable)")
    parser.add_argument(
        "--plot", metavar="PATH", help="write a PNG: returns histogram, episode lengths, per-dimension ranges"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    parser.add_argument(
        "--min-transitions", type=int, default=1000, help="warn below this many transitions (default 1000)"
    )
    parser.add_argument(
        "--exploding-abs", type=float, default=1e4, help="flag dimensions whose |value| exceeds this (default 1e4)"
    )


def run(args: argparse.Namespace) -> int:
    report = inspect_dataset(args.dataset_id, min_transitions=args.min_transitions, exploding_abs=args.exploding_abs)
    print(report.to_json() if args.json else format_report(report))
    if args.plot:
        path = plot_report(report, args.plot)
        if not args.json:
            print(f"plot written to {path}")
    return 0
