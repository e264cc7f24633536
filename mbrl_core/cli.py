"""The ``mbrl`` command line. Each subcommand lives in its own module, imported only when needed."""

from __future__ import annotations

import argparse
import importlib
import sys

from mbrl_core.errors import MbrlError

# subcommand -> module defining HELP, add_arguments(parser) and run(args) -> int
COMMANDS = {
    "quickstart": "mbrl_core.commands.quickstart",
    "train": "mbrl_core.commands.train",
    "eval": "mbrl_core.commands.eval",
    "compare": "mbrl_core.commands.compare",
    "report": "mbrl_core.commands.report",
    "dynamics": "dynamics.cli",
    "rollouts": "mbrl_core.commands.rollouts",
    "collect": "mbrl_core.commands.collect",
    "inspect": "mbrl_core.commands.inspect",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mbrl",
        description="Model-based offline RL: pretrain a dynamics ensemble once, train MOPO/MOReL/COMBO and CQL/IQL/AWAC/TD3-BC/BC under one trainer, compare them.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_path in COMMANDS.items():
        module = importlib.import_module(module_path)
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 1
    try:
        return int(args.handler(args) or 0)
    except MbrlError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint is kept; continue with the same command plus --name <run folder> --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
