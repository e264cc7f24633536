"""`mbrl rollouts inspect <path.zarr>`: what a rollout store holds (size, provenance, reward/uncertainty histograms)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from mbrl_core.rollout_store import RolloutStore

HELP = "look inside a Zarr rollout store (`mbrl rollouts inspect <path.zarr>`)"
BINS = 12
# Rows read at a time, so a store larger than memory can be summarized.
READ_ROWS = 1_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="rollouts_command", metavar="COMMAND", required=True)
    inspect = commands.add_parser(
        "inspect", help="size, provenance, per-generation counts, reward and uncertainty histograms"
    )
    inspect.add_argument("path", help="a rollout store: local folder or fsspec URL (e.g. runs/<run>/rollouts.zarr)")
    inspect.add_argument("--plot", metavar="PNG", help="also write the histograms to this PNG file")
    inspect.add_argument("--json", action="store_true", help="print the summary as JSON")
    inspect.add_argument(
        "--last", type=int, metavar="N", help="histograms over the last N generations only (default: all)"
    )


def run(args: argparse.Namespace) -> int:
    store = RolloutStore.open(args.path)
    summary = summarize(store, args.last)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    if args.plot:
        plot_histograms(summary, args.plot)
        if not args.json:
            print(f"plot written to {args.plot}")
    return 0


def summarize(store, last: int | None = None) -> dict[str, Any]:
    """Counts, provenance and histograms of the committed rows (of the last ``last`` generations)."""
    generations = store.generations[-last:] if last else store.generations
    start, stop = (generations[0]["start"], generations[-1]["stop"]) if generations else (0, 0)
    columns = ["rewards", "terminals", "step_indices"] + [f"uncertainty/{name}" for name in store.uncertainty_names]
    values: dict[str, list[np.ndarray]] = {name: [] for name in columns}
    for begin in range(start, stop, READ_ROWS):
        for name in columns:
            values[name].append(np.asarray(store.group[name][begin : min(begin + READ_ROWS, stop)]))
    merged = {name: np.concatenate(parts) if parts else np.zeros(0) for name, parts in values.items()}
    starts = int((merged["step_indices"] == 0).sum())
    return {
        "path": store.url,
        "bytes_on_disk": local_size(store.url),
        "committed_rows": store.committed_rows,
        "generations": len(store.generations),
        "summarized_generations": len(generations),
        "rows_summarized": stop - start,
        "mean_rollout_length": (stop - start) / starts if starts else 0.0,
        "terminal_fraction": float(merged["terminals"].mean()) if stop > start else 0.0,
        "provenance": store.metadata,
        "per_generation": [
            {k: g[k] for k in ("number", "policy_step")} | {"rows": g["stop"] - g["start"]} for g in generations
        ],
        "histograms": {
            name.split("/")[-1]: histogram(merged[name])
            for name in columns
            if name not in ("terminals", "step_indices")
        },
    }


def histogram(values) -> dict[str, Any]:
    if values.size == 0:
        return {"count": 0}
    counts, edges = np.histogram(values, bins=BINS)
    return {
        "count": int(values.size),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "counts": counts.tolist(),
        "edges": edges.tolist(),
    }


def local_size(url: str) -> int | None:
    """Bytes of a local store; None for remote URLs."""
    path = Path(url)
    if "://" in url or not path.exists():
        return None
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def format_summary(summary: dict[str, Any]) -> str:
    size = summary["bytes_on_disk"]
    lines = [
        f"rollout store {summary['path']}",
        f"  rows {summary['committed_rows']:,} in {summary['generations']} generation(s)"
        + (f", {size / 2**20:.1f} MiB on disk" if size is not None else ""),
        f"  summarized: last {summary['summarized_generations']} generation(s), {summary['rows_summarized']:,} rows, "
        f"mean rollout length {summary['mean_rollout_length']:.2f}, terminal fraction "
        f"{summary['terminal_fraction']:.3f}",
        "provenance:",
    ]
    lines += [f"  {key}: {value}" for key, value in sorted(summary["provenance"].items())]
    if summary["per_generation"]:
        steps = [g["policy_step"] for g in summary["per_generation"]]
        rows = [g["rows"] for g in summary["per_generation"]]
        lines.append(
            f"generations: policy steps {steps[0]}..{steps[-1]}, rows per generation {min(rows):,}..{max(rows):,}"
        )
    for name, hist in summary["histograms"].items():
        lines += text_histogram(name, hist)
    return "\n".join(lines)


def text_histogram(name: str, hist: dict[str, Any], width: int = 40) -> list[str]:
    if not hist["count"]:
        return [f"{name}: no rows"]
    lines = [f"{name}: mean {hist['mean']:.4g}, std {hist['std']:.4g}, min {hist['min']:.4g}, max {hist['max']:.4g}"]
    peak = max(hist["counts"]) or 1
    for count, low, high in zip(hist["counts"], hist["edges"][:-1], hist["edges"][1:]):
        lines.append(f"  [{low:>10.4g}, {high:>10.4g})  {'#' * round(width * count / peak):<{width}} {count}")
    return lines


def plot_histograms(summary: dict[str, Any], path: str) -> None:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    histograms = {name: h for name, h in summary["histograms"].items() if h["count"]}
    figure, axes = plt.subplots(1, max(len(histograms), 1), figsize=(4 * max(len(histograms), 1), 3), squeeze=False)
    for axis, (name, hist) in zip(axes[0], histograms.items()):
        axis.stairs(hist["counts"], hist["edges"], fill=True)
        axis.set_title(name)
        axis.set_xlabel("value")
    axes[0][0].set_ylabel("rows")
    figure.suptitle(
        f"{summary['path']}: {summary['rows_summarized']:,} rows, {summary['summarized_generations']} generation(s)"
    )
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
