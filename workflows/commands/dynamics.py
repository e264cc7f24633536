"""`mbrl dynamics`: train, list and show stored dynamics models.

mbrl dynamics train --dataset <minari-id>   # trains, or says it is already trained and prints its key
mbrl dynamics list                           # every stored model
mbrl dynamics show <key>                     # metrics, config, calibration, a plot of holdout error per member

mbrl dynamics serve <key>                    # the HTTP service (workflows.commands.dynamics_serve)
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence

import yaml

from dynamics.artifacts import ArtifactStore
from dynamics.quality import format_quality, plot_holdout_error
from dynamics.service import DynamicsService
from dynamics.termination import TerminationRule
from mbrl_core.data import load_dataset
from mbrl_core.errors import ArtifactError, ConfigError
from workflows.commands import dynamics_serve

HELP = "train, list and show pretrained dynamics ensembles (trained once per dataset, reused by MOPO/MOReL/COMBO)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    subparsers = parser.add_subparsers(dest="dynamics_command", metavar="SUBCOMMAND")
    train = subparsers.add_parser("train", help="train the ensemble of a dataset (or report the stored one)")
    train.add_argument(
        "--dataset", required=True, help="Minari dataset id (local under MINARI_DATASETS_PATH, else downloaded)"
    )
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override configs/dynamics.yaml, e.g. patience=10 or ensemble_size=5; repeatable",
    )
    train.add_argument("--retrain", action="store_true", help="train again even if this dataset and config are stored")
    train.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu, ...")
    train.add_argument("--devices", default="auto", help="Lightning devices: auto, 1, 4, '0,1', ...")
    train.add_argument("--strategy", default="auto", help="Lightning strategy: auto, ddp, ...")
    train.add_argument("--num-nodes", type=int, default=1, help="machines for multi-node (DDP) training")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(dynamics_handler=run_train)
    listing = subparsers.add_parser("list", help="every stored model: dataset, key, date, holdout scores, elites")
    listing.set_defaults(dynamics_handler=run_list)
    show = subparsers.add_parser(
        "show", help="a model's metrics, config, calibration and a plot of holdout error per member"
    )
    show.add_argument("key", help="model key (or a unique prefix of one)")
    show.add_argument(
        "--plot", default=None, help="where to write the PNG (default: holdout_error.png in the model's folder)"
    )
    show.set_defaults(dynamics_handler=run_show)
    for sub in (train, listing, show):
        sub.add_argument(
            "--store",
            default=None,
            help="artifact folder or URL such as s3://bucket/dynamics "
            "(default: MBRL_DYNAMICS_STORE, else ~/.cache/mbrl-offline-suite/dynamics)",
        )
    serve = subparsers.add_parser("serve", help=dynamics_serve.HELP, description=dynamics_serve.HELP)
    dynamics_serve.add_arguments(serve)
    serve.set_defaults(dynamics_handler=dynamics_serve.run)
    parser.set_defaults(dynamics_parser=parser)


def run(args: argparse.Namespace) -> int:
    handler = getattr(args, "dynamics_handler", None)
    if handler is None:
        args.dynamics_parser.print_help()
        return 1
    return int(handler(args) or 0)


def parse_settings(pairs: list[str]) -> dict:
    """``["patience=10"]`` -> ``{"patience": 10}`` (values parsed as YAML)."""

    values = {}
    for pair in pairs:
        key, separator, raw = pair.partition("=")
        if not separator or not key.strip():
            raise ConfigError(f"--set '{pair}' must look like key=value (e.g. patience=10)")
        values[key.strip().removeprefix("dynamics.")] = yaml.safe_load(raw) if raw.strip() else None
    return values


def _devices(value: str):
    return int(value) if value.isdigit() else value


def launched_as_rank_zero() -> bool:
    """False in the processes Lightning's DDP launcher starts for the other ranks (they set these)."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def run_train(args: argparse.Namespace) -> int:
    data = load_dataset(args.dataset)
    service = DynamicsService.fit(
        data,
        parse_settings(args.overrides),
        store=args.store,
        retrain=args.retrain,
        progress=not args.no_progress,
        accelerator=args.accelerator,
        devices=_devices(args.devices),
        strategy=args.strategy,
        num_nodes=args.num_nodes,
    )
    if not launched_as_rank_zero():
        return 0  # rank zero publishes the artifact and reports
    metrics, where = service.metrics, service.store.describe(service.key)
    if service.was_cached:
        print(f"already trained: {service.key} ({where}); use --retrain to train again")
    else:
        print(f"trained: {service.key} in {metrics['train_seconds']:.1f}s, {metrics['epochs']} epochs ({where})")
    print(
        f"holdout MSE (elites) {metrics['holdout_mse_elites']:.4g}, NLL "
        f"{metrics['holdout_nll_elites']:.4g}, elites {service.elites}"
    )
    return 0


def run_list(args: argparse.Namespace) -> int:
    store = ArtifactStore(args.store)
    rows = [("key", "dataset", "created", "holdout_mse", "holdout_nll", "epochs", "elites")]
    for key in store.keys():
        try:
            meta = store.read_meta(key)
        except ArtifactError:
            state = "(corrupted)" if store.exists(key) else "(not published: its upload was interrupted)"
            rows.append((key, state, "", "", "", "", ""))
            continue
        metrics = meta["metrics"]
        rows.append(
            (
                key,
                meta["dataset"]["id"],
                meta["created"],
                f"{metrics['holdout_mse_elites']:.4g}",
                f"{metrics['holdout_nll_elites']:.4g}",
                str(metrics["epochs"]),
                ",".join(map(str, meta["elites"])),
            )
        )
    interrupted = store.interrupted_fits()
    if len(rows) == 1 and not interrupted:
        print(f"no dynamics models in {store.where} (train one with `mbrl dynamics train --dataset <id>`)")
        return 0
    if len(rows) > 1:
        print(_table(rows))
    for key, epochs in interrupted.items():
        done = f"after epoch {epochs}" if epochs is not None else "its checkpoint is unreadable: it starts again"
        print(f"interrupted fit {key}: {done}; the next training of the same dataset and settings resumes it")
    return 0


def run_show(args: argparse.Namespace) -> int:
    store = ArtifactStore(args.store)
    key = store.resolve(args.key)
    meta = store.read_meta(key)
    metrics, stats = meta["metrics"], meta["disagreement_stats"]
    print(f"model {key}  ({store.describe(key)})")
    print(
        f"dataset {meta['dataset']['id']} (env {meta['dataset']['env_id']}, "
        f"{meta['dataset']['transitions']} transitions, fingerprint {meta['dataset']['fingerprint']})"
    )
    print(
        f"created {meta['created']}; trained {metrics['train_seconds']:.1f}s, {metrics['epochs']} "
        f"epochs, stopped early: {metrics['stopped_early']}"
    )
    print(f"termination: {TerminationRule.from_dict(meta['termination']).describe()}; elites {meta['elites']}")
    print(
        f"dataset disagreement ({stats['feature']}): max {stats['max']:.4g}, p99 {stats['p99']:.4g}, "
        f"mean {stats['mean']:.4g}"
    )
    print("\nquality on the holdout split:")
    print(format_quality(meta["quality"], meta["elites"]))
    print("\nconfig: " + json.dumps(meta["config"], sort_keys=True))
    print("libraries: " + ", ".join(f"{name} {version}" for name, version in sorted(meta["library_versions"].items())))
    plot = plot_holdout_error(
        meta["quality"],
        meta["elites"],
        args.plot or store.path(key) / "holdout_error.png",
        f"{key} on {meta['dataset']['id']}",
    )
    print(f"\nplot: {plot}")
    return 0


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)
