"""`mbrl train`: one learner on one dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from mbrl_core.config import parse_overrides
from mbrl_core.errors import ConfigError
from mbrl_core.storage import is_url, locate
from mbrl_core.trainer import PRECISIONS
from workflows.remote_runs import working_copy
from workflows.runs import check_folder_name, is_finished, read_eval, runs_root, train_run

HELP = "train one learner (model-free or model-based) on a Minari dataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--algo", required=True, help="bc, td3bc, iql, awac, cql, sac, mopo, morel or combo")
    parser.add_argument(
        "--dataset", required=True, help="Minari dataset id (local under MINARI_DATASETS_PATH, else downloaded)"
    )
    parser.add_argument("--steps", type=int, default=None, help="gradient updates (default: configs/trainer.yaml, 1M)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=(
            "override a config value: expectile=0.5 (learner section), trainer.eval_every=2000, "
            "rollouts.horizon=1; repeatable"
        ),
    )
    parser.add_argument(
        "--runs-dir",
        default="runs",
        help="where run folders go: a folder or a URL such as s3://bucket/runs (default: runs)",
    )
    parser.add_argument("--name", default=None, help="run folder name (default: <algo>-<dataset>-s<seed>-<time>)")
    parser.add_argument("--resume", action="store_true", help="continue the run --name from its last checkpoint")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--dynamics-store",
        default=None,
        help="dynamics artifact folder or URL such as s3://bucket/dynamics "
        "(default: MBRL_DYNAMICS_STORE or the user cache)",
    )
    parser.add_argument(
        "--rollouts", default=None, help="model-based: an existing rollouts.zarr to reuse (e.g. with another penalty)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_precision_argument(parser)


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="policy updates in float32 (32) or under bfloat16 autocast (bf16); same as --set trainer.precision=...",
    )


def with_precision(args: argparse.Namespace) -> list[str]:
    """The --set overrides, plus trainer.precision when --precision was given (not both)."""
    if args.precision and any(setting.startswith("trainer.precision=") for setting in args.overrides):
        raise ConfigError("give --precision or --set trainer.precision=..., not both")
    return [*args.overrides, *([f"trainer.precision={args.precision}"] if args.precision else [])]


# Trainer settings with an option of their own: the option decides, so a --set of them would be ignored.
OWN_OPTIONS = {"steps": "--steps", "seed": "--seed (--seeds in a grid)", "device": "--device"}


def parse_run_overrides(settings: list[str]) -> dict:
    """``--set`` values as overrides, refusing the trainer settings that have their own option."""
    overrides = parse_overrides(settings)
    for key in sorted(set(overrides.get("trainer") or {}) & OWN_OPTIONS.keys()):
        raise ConfigError(f"--set trainer.{key}: use {OWN_OPTIONS[key]} instead (it would override the --set)")
    return overrides


def run(args: argparse.Namespace) -> int:
    if args.name is not None:
        check_folder_name(args.name, "--name")
    already_finished = args.resume and _check_resumable(args)
    run_dir = train_run(
        args.algo,
        args.dataset,
        steps=args.steps,
        seed=args.seed,
        overrides=parse_run_overrides(with_precision(args)),
        runs_dir=args.runs_dir,
        run_name=args.name,
        resume=args.resume,
        device=args.device,
        dynamics_store=args.dynamics_store,
        rollouts=args.rollouts,
        progress=not args.no_progress,
    )
    if already_finished:
        print(f"{run_dir} had already finished: nothing to resume")
    final = read_eval(run_dir)["final"]
    score = (
        f", normalized score {final['normalized_score']:.1f}"
        if final.get("normalized_score") is not None
        else " (no reference scores in the dataset)"
    )
    where = f"{args.runs_dir.rstrip('/')}/{run_dir.name} (working copy {run_dir})" if is_url(args.runs_dir) else run_dir
    print(f"run: {where}\nfinal return {final['return_mean']:.1f} ± {final['return_std']:.1f}{score}")
    return 0


def _check_resumable(args: argparse.Namespace) -> bool:
    """Refuse ``--resume`` of a run that was never started; True when it has already finished."""
    if not args.name:
        raise ConfigError("--resume needs --name <run folder name> to know which run to continue")
    if is_url(args.runs_dir):
        remote = locate(args.runs_dir).child(args.name)
        where: str | Path = remote.url
        started = remote.child("config.yaml").exists() or (working_copy(remote.url) / "config.yaml").exists()
    else:
        run_dir = runs_root(args.runs_dir) / args.name
        where, started = run_dir, (run_dir / "config.yaml").exists()
    if not started:
        raise ConfigError(
            f"no run to resume at {where} (no config.yaml there); check --name and --runs-dir, "
            "or drop --resume to start a new run"
        )
    return is_finished(where)
