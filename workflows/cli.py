"""The ``mbrl`` command line. Each subcommand lives in its own module of ``workflows.commands``."""

from __future__ import annotations

import argparse
import sys

from mbrl_core.errors import MbrlError
from workflows.commands import (
    collect,
    compare,
    dynamics,
    inspect,
    quickstart,
    report,
    rollouts,
    train,
)
from workflows.commands import eval as eval_command

# subcommand -> module defining HELP, add_arguments(parser) and run(args) -> int
COMMANDS = {
    "quickstart": quickstart,
    "train": train,
    "eval": eval_command,
    "compare": compare,
    "report": report,
    "dynamics": dynamics,
    "rollouts": rollouts,
    "collect": collect,
    "inspect": inspect,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mbrl",
        description=(
            "Model-based offline RL: pretrain a dynamics ensemble once, train MOPO/MOReL/COMBO and "
            "CQL/IQL/AWAC/TD3-BC/BC under one trainer, compare them."
        ),
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
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
    except OSError as error:  # the machine said no (a folder that cannot be made, a full disk): one line, too
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "interrupted: the last checkpoint is kept; continue with the same command plus --name "
            "<run folder> --resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
