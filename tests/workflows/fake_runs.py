"""Fabricated run folders (the eval.json schema of workflows.runs), so report tests need no training."""

from __future__ import annotations

import csv
import json
from pathlib import Path


def fabricate_run(
    folder: Path, algo: str, dataset_id: str, seed: int, model_based: bool, final: float, refs: bool = True
) -> Path:
    """A finished run whose history climbs from 0 to ``final``, its best evaluation 10 points above it mid-way."""
    run_dir = folder / "runs" / f"{algo}-{dataset_id.replace('/', '_')}-s{seed}"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(f"algo: {algo}\n")

    def point(step: int, score: float) -> dict:
        return {
            "step": step,
            "return_mean": 10.0 * score,
            "return_std": 1.0,
            "normalized_score": score if refs else None,
            "episodes": 5,
        }

    history = [point(0, 0.0), point(500, final + 10.0), point(1000, final)]
    evaluation = {
        "algo": algo,
        "dataset_id": dataset_id,
        "seed": seed,
        "steps": 1000,
        "model_based": model_based,
        "final": history[-1],
        "best": history[1],
        "history": history,
        "train_seconds": 100.0 + seed,
        "updates_per_second": 12.0,
        "dynamics": {"key": "toy-dynamics", "reused": seed > 0, "pretrain_seconds": 30.0 if seed == 0 else 0.1}
        if model_based
        else None,
        "finished": True,
    }
    (run_dir / "eval.json").write_text(json.dumps(evaluation))
    return run_dir


def fabricate_grid(folder: Path, grid: dict[str, tuple[bool, list[float]]], dataset_id: str) -> None:
    """``grid``: algo -> (model based, final score per seed 0, 1, ...)."""
    for algo, (model_based, finals) in grid.items():
        for seed, final in enumerate(finals):
            fabricate_run(folder, algo, dataset_id, seed, model_based, final)


def write_metrics(run_dir: Path, rows: list[dict[str, float]]) -> None:
    """A metrics.csv as Lightning's CSV logger writes it: one row per log call, blanks where a metric is absent."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(run_dir / "metrics.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
