"""Does bfloat16 autocast learn as well as float32? Final scores of the same runs in both precisions.

    python -m benchmarks.precision --dataset hopper/medium-v0 --algos td3bc iql cql --seeds 3 --steps 5000
    python -m benchmarks.precision   # the embedded InvertedPendulum dataset (built offline if missing)

(``-m``: run as a script, this folder's ``dynamics.py`` would shadow the ``dynamics`` package.)

Each (learner, seed) is trained twice through ``workflows.runs.train_run``, the same
path as ``mbrl train``, once with ``trainer.precision: "32"`` and once with ``bf16``,
and evaluated at the end. Written to ``benchmarks/results/precision.json``: every
run's final normalized score and wall-clock updates per second, and per learner the
mean, the standard deviation over seeds and the difference of the means in units of
its standard error. (Speed is measured properly, side by side, in ``throughput.py``.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from workflows.embedded import DEFAULT_DATASET_ID, build_default_dataset
from workflows.runs import read_eval, train_run

PRECISIONS = ("32", "bf16")


def run_grid(dataset: str, algos: list[str], seeds: int, steps: int, episodes: int, runs_dir: Path) -> dict:
    runs = []
    for algo in algos:
        for seed in range(seeds):
            for precision in PRECISIONS:
                trainer = {
                    "precision": precision,
                    "eval_every": steps,
                    "eval_episodes": episodes,
                    "log_every": steps,
                    "checkpoint_every": 10 * steps,
                }
                run_dir = train_run(
                    algo,
                    dataset,
                    steps=steps,
                    seed=seed,
                    overrides={"trainer": trainer},
                    runs_dir=runs_dir,
                    run_name=f"{algo}-s{seed}-{precision}",
                    device="cpu",
                    progress=False,
                )
                record = read_eval(run_dir)
                final = record["final"]
                runs.append(
                    {
                        "algo": algo,
                        "seed": seed,
                        "precision": precision,
                        "normalized_score": final.get("normalized_score"),
                        "return_mean": final["return_mean"],
                        "updates_per_second_wall": record["updates_per_second"],
                    }
                )
                print(json.dumps(runs[-1]), flush=True)
    return {"dataset": dataset, "steps": steps, "seeds": seeds, "eval_episodes": episodes, "runs": runs}


def summarize(results: dict) -> dict:
    summary = {}
    for algo in dict.fromkeys(run["algo"] for run in results["runs"]):
        cells = {}
        for precision in PRECISIONS:
            scores = [
                run["normalized_score"] if run["normalized_score"] is not None else run["return_mean"]
                for run in results["runs"]
                if run["algo"] == algo and run["precision"] == precision
            ]
            cells[precision] = {
                "mean": statistics.mean(scores),
                "std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
                "n": len(scores),
            }
        first, second = cells["32"], cells["bf16"]
        standard_error = ((first["std"] ** 2 + second["std"] ** 2) / max(first["n"], 1)) ** 0.5
        cells["difference_in_standard_errors"] = (second["mean"] - first["mean"]) / max(standard_error, 1e-9)
        summary[algo] = cells
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=None, help=f"Minari dataset id (default: embedded {DEFAULT_DATASET_ID})")
    parser.add_argument("--algos", nargs="+", default=["td3bc", "iql", "cql"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "precision.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = args.dataset or build_default_dataset()
    with tempfile.TemporaryDirectory() as runs_dir:
        results = run_grid(dataset, args.algos, args.seeds, args.steps, args.eval_episodes, Path(runs_dir))
    results["summary"] = summarize(results)
    results["command"] = "python -m benchmarks.precision " + " ".join(sys.argv[1:])
    results["load_average_at_end"] = os.getloadavg()[0]
    for algo, cells in results["summary"].items():
        line = "  ".join(f"{p}: {cells[p]['mean']:.1f} ± {cells[p]['std']:.1f} (n={cells[p]['n']})" for p in PRECISIONS)
        print(f"{algo:6s} {line}  difference {cells['difference_in_standard_errors']:+.1f} standard errors")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
