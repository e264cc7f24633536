"""Quality benchmark (not a test): every learner on D4RL-style Hopper-v5 and HalfCheetah-v5 datasets.

1. ``mbrl collect`` builds the datasets (online SAC behaviour policy for
   ``--sac-steps`` environment steps, then random / medium / medium-replay /
   expert / medium-expert of ``--transitions`` each); a finished collection is
   reused, an interrupted one resumes (while another ``mbrl collect`` of the
   same name runs, it is refused).
2. ``mbrl compare`` trains every learner on every dataset at one gradient
   budget (``--steps`` updates, the trainer's default evaluation protocol); it
   resumes too, and a larger ``--seeds`` later adds only the new seeds.
3. Writes ``benchmarks/results/quality.json`` (per dataset x learner: the final
   normalized score of each seed, mean, sample std, number of seeds, budget,
   behaviour budget, wall-clock), draws it as ``quality.png`` (``quality_plot.py``)
   and copies the compare report's markdown to ``benchmarks/results/quality.md``.

Hours of CPU: start it in the background, with one seed, and add seeds later:

    python benchmarks/quality.py --seeds 1 --workers 2          # then --seeds 3 to add two more
    python benchmarks/quality.py --report-only                   # rewrite the JSON from finished runs

``--keep-earlier`` keeps the cells of the existing ``--out`` file that this grid
has no finished run for (a grid whose run folders were lost, say), but only on
a dataset shown to be the same: its content fingerprint, recorded in the file,
or for a file from before fingerprints, the dynamics model key of one of its
model-based cells, which hashes the fingerprint with the dynamics settings.
A collection repeats exactly on one machine, not always on another CPU (the
behaviour SAC's floating point; the README's Conventions): before training, the
script warns when the collection just built differs from the one the ``--out``
file records.

Datasets go to the Minari root (``MINARI_DATASETS_PATH``), runs to
``--runs-dir`` (default ``runs/``, not committed).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# this folder holds a dynamics.py benchmark that would shadow the `dynamics` package
sys.path = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, for benchmarks.quality_plot

import torch

from benchmarks.quality_plot import plot_quality
from dynamics.artifacts import ArtifactStore, artifact_key
from dynamics.config import make_dynamics_config
from mbrl_core.data import load_dataset, local_datasets_root
from mbrl_core.errors import ArtifactError, DatasetError
from workflows.collect import RECORD_FILE, collection_dir
from workflows.compare import RUNS_SUBDIR, RunTask, compare_folder
from workflows.report import score_of
from workflows.runs import is_finished, read_eval

REPOSITORY = Path(__file__).resolve().parents[1]
RESULTS = REPOSITORY / "benchmarks" / "results"
ENVIRONMENTS = {"hopper": "Hopper-v5", "halfcheetah": "HalfCheetah-v5"}
DATASETS = ("hopper/medium-replay-v0", "hopper/medium-v0", "halfcheetah/medium-replay-v0", "halfcheetah/medium-v0")
ALGOS = ("mopo", "morel", "combo", "cql", "iql", "awac", "td3bc", "bc")
STEPS = 30_000
SAC_STEPS = 200_000  # the behaviour policy's online budget (D4RL used 1M; see the README's quality section)
TRANSITIONS = 100_000  # random, medium and expert each (D4RL: 1M)
# D4RL's reference returns (Farama-Foundation/D4RL d4rl/infos.py REF_MIN_SCORE / REF_MAX_SCORE, the same for every
# dataset of an environment): a return also put on D4RL's scale reads next to published tables. Our own scale
# (this collection's random policy and its 200k-step SAC) has a weaker "expert", so its scores run higher.
D4RL_REFERENCE_RETURNS = {"hopper": (-20.272305, 3234.3), "halfcheetah": (-280.178953, 12135.0)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), help="<name>/<kind>-v0 ids")
    parser.add_argument("--algos", nargs="+", default=list(ALGOS))
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per cell; raise it later to add seeds")
    parser.add_argument("--steps", type=int, default=STEPS, help="gradient updates per run, every learner")
    parser.add_argument("--workers", type=int, default=2, help="runs trained at once")
    parser.add_argument("--runs-dir", default=str(REPOSITORY / "runs"), help="where compare-<name>/ goes")
    parser.add_argument("--name", default=None, help="compare name (default: quality-<steps>steps)")
    parser.add_argument("--sac-steps", type=int, default=SAC_STEPS, help="behaviour SAC environment steps")
    parser.add_argument("--transitions", type=int, default=TRANSITIONS, help="size of random/medium/expert")
    parser.add_argument("--collect-seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "quality.json"), help="the results file")
    parser.add_argument("--report-only", action="store_true", help="no training: summarize the finished runs")
    parser.add_argument(
        "--keep-earlier",
        action="store_true",
        help="keep the --out file's cells this grid has not run, where its datasets are provably the same",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no live display, no progress lines (else a log gets one a minute)"
    )
    return parser.parse_args()


def mbrl(*arguments: str) -> None:
    """One ``mbrl`` command, from this checkout, its output straight to the terminal; stops on failure."""
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-m", "workflows.cli", *arguments]
    print("$ mbrl " + " ".join(arguments), flush=True)
    completed = subprocess.run(command, cwd=REPOSITORY, env=environment)
    if completed.returncode != 0:
        sys.exit(f"mbrl {arguments[0]} failed with exit status {completed.returncode}")


def collection_name(dataset_id: str) -> str:
    name = dataset_id.split("/")[0]
    if name not in ENVIRONMENTS or dataset_id.count("/") != 1:
        sys.exit(f"{dataset_id}: this benchmark collects <{'|'.join(ENVIRONMENTS)}>/<kind>-v0 datasets only")
    return name


def collect(args: argparse.Namespace) -> None:
    for name in dict.fromkeys(collection_name(dataset_id) for dataset_id in args.datasets):
        # --resume starts a new collection, continues an interrupted one, or returns a finished one's record
        mbrl(
            "collect", "--env", ENVIRONMENTS[name], "--name", name, "--sac-steps", str(args.sac_steps),
            "--transitions", str(args.transitions), "--seed", str(args.collect_seed), "--device", "cpu",
            "--resume", *(["--no-progress"] if args.no_progress else []),
        )  # fmt: skip


def compare(args: argparse.Namespace, name: str) -> None:
    mbrl(
        "compare", "--name", name, "--datasets", *args.datasets, "--algos", *args.algos,
        "--seeds", str(args.seeds), "--steps", str(args.steps), "--workers", str(args.workers),
        "--out", args.runs_dir, "--device", "cpu", *(["--no-progress"] if args.no_progress else []),
    )  # fmt: skip


def behaviour_record(name: str) -> dict[str, Any]:
    """What the datasets of one collection were made from (its collection.json)."""
    record = json.loads((collection_dir(name) / RECORD_FILE).read_text())
    config = record["config"]
    return {
        "env_id": config["env_id"],
        "sac_steps": config["sac_steps"],
        "collect_seed": config["seed"],
        "ref_min_score": record.get("ref_min_score"),
        "ref_max_score": record.get("ref_max_score"),
        "medium_checkpoint_step": record.get("medium", {}).get("step"),
        "medium_return": record.get("medium", {}).get("return_mean"),
        "datasets": {entry["dataset_id"]: entry["transitions"] for entry in record.get("datasets", {}).values()},
        "status": record["status"],
    }


def cell(folder: Path, algo: str, dataset_id: str, seeds: list[int]) -> dict[str, Any] | None:
    """The finished seeds of one learner on one dataset; None when no seed has finished."""
    runs = [folder / RUNS_SUBDIR / RunTask(algo, dataset_id, seed, False).name for seed in seeds]
    evaluations = [read_eval(run) for run in runs if is_finished(run)]
    if not evaluations:
        return None
    finals = [score_of(evaluation["final"]) for evaluation in evaluations]
    returns = [float(evaluation["final"]["return_mean"]) for evaluation in evaluations]
    dynamics = evaluations[0].get("dynamics") or {}
    return {
        "final_scores": {str(evaluation["seed"]): score for evaluation, score in zip(evaluations, finals)},
        "mean": statistics.fmean(finals),
        "std": statistics.stdev(finals) if len(finals) > 1 else None,
        "seeds": len(finals),
        "final_returns": {str(evaluation["seed"]): value for evaluation, value in zip(evaluations, returns)},
        "d4rl_scale_mean": d4rl_scale(collection_name(dataset_id), statistics.fmean(returns)),
        "best_during_training_mean": statistics.fmean(score_of(evaluation["best"]) for evaluation in evaluations),
        "updates": evaluations[0]["steps"],
        "wall_seconds_mean": statistics.fmean(evaluation["train_seconds"] for evaluation in evaluations),
        "dynamics_pretrain_seconds": dynamics.get("pretrain_seconds"),  # once per dataset, shared by its MB runs
        "dynamics_fit": dynamics_fit(dynamics.get("key")),
    }


def dynamics_fit(key: str | None) -> dict[str, Any] | None:
    """How the dataset's dynamics model was fitted (from the default store), when the run used one."""
    if key is None:
        return None
    try:
        metrics = ArtifactStore().read_meta(key)["metrics"]
    except ArtifactError:
        return {"key": key, "note": "not in this machine's dynamics store"}
    names = ("epochs", "stopped_early", "train_seconds", "holdout_mse_elites", "resumed_after_epoch")
    return {"key": key} | {name: metrics.get(name) for name in names}


def d4rl_scale(name: str, mean_return: float) -> float:
    """100 (R - D4RL random) / (D4RL expert - D4RL random)."""
    low, high = D4RL_REFERENCE_RETURNS[name]
    return 100.0 * (mean_return - low) / (high - low)


def read_grid(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """The grid's compare.json; with --keep-earlier and no grid here yet, an empty grid of the asked datasets."""
    if (folder / "compare.json").exists():
        return json.loads((folder / "compare.json").read_text())
    if not args.keep_earlier:
        sys.exit(f"no grid at {folder}: train one (without --report-only), or keep earlier cells with --keep-earlier")
    return {"datasets": args.datasets, "algos": [], "seeds": [], "steps": args.steps, "overrides": {}}


def summarize(args: argparse.Namespace, folder: Path, started: float) -> dict[str, Any]:
    grid = read_grid(args, folder)
    names = dict.fromkeys(collection_name(dataset_id) for dataset_id in grid["datasets"])
    results = {
        dataset_id: {algo: found for algo in grid["algos"] if (found := cell(folder, algo, dataset_id, grid["seeds"]))}
        for dataset_id in grid["datasets"]
    }
    return {
        "command": "python benchmarks/quality.py " + " ".join(sys.argv[1:]),
        "machine": machine_record(),
        "budget": {"updates_per_run": grid["steps"], "overrides": grid["overrides"], "seeds_asked": grid["seeds"]},
        "score": "final normalized score: 100 (R - random) / (expert - random), refs from each collection",
        "d4rl_scale": "the same final returns on D4RL's reference returns (d4rl/infos.py)",
        "behaviour": {name: behaviour_record(name) for name in names},
        "fingerprints": {dataset_id: fingerprint_of(dataset_id) for dataset_id in results},
        "results": results,
        "compare_folder": str(folder),
        "minari_root": str(local_datasets_root()),
        "this_invocation_seconds": time.perf_counter() - started,
    }


def machine_record() -> dict[str, Any]:
    """What the results depend on beyond the code: the behaviour SAC's floating point (and so the datasets) can
    differ between CPUs and library builds, while the simulator repeats exactly (see the README)."""
    versions = {name: importlib.metadata.version(name) for name in ("numpy", "gymnasium", "mujoco", "minari")}
    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "cores": os.cpu_count(),
        **versions,
    }


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor()


def collection_differences(name: str, earlier: dict[str, Any]) -> list[str]:
    """How this machine's collection ``name`` differs from the one the earlier results were made from."""
    recorded = earlier.get("behaviour", {}).get(name)
    if recorded is None:
        return []
    here = behaviour_record(name)
    keys = ("ref_min_score", "ref_max_score", "medium_checkpoint_step", "medium_return")
    return [f"{key} {here[key]!r} here, {recorded.get(key)!r} there" for key in keys if here[key] != recorded.get(key)]


def warn_of_other_collections(args: argparse.Namespace, earlier: dict[str, Any], source: str) -> None:
    """Before hours of training: say when the datasets just built are not the ones ``source`` was made from."""
    for name in dict.fromkeys(collection_name(dataset_id) for dataset_id in args.datasets):
        if differences := collection_differences(name, earlier):
            print(
                f"warning: the {name} collection on this machine is not the one {source} was made from "
                f"({'; '.join(differences)}): its cells describe other datasets and cannot be kept beside this grid's "
                "(--keep-earlier checks each dataset's fingerprint)"
            )


def fingerprint_of(dataset_id: str) -> str | None:
    """The content fingerprint of a local dataset (None when it is not on this machine)."""
    try:
        return load_dataset(dataset_id, download=False).fingerprint
    except DatasetError:
        return None


def same_dataset(dataset_id: str, fingerprint: str, recorded: str | None, model_keys: list[str]) -> str | None:
    """How earlier results are shown to be on this very dataset: the ``recorded`` fingerprint, or one of the
    dynamics ``model_keys`` their model-based runs used (a hash of the fingerprint and the dynamics settings)."""
    if recorded == fingerprint:
        return "same dataset fingerprint"
    key = artifact_key(fingerprint, make_dynamics_config(None, dataset_id).to_dict())
    if key in model_keys:
        return f"same dynamics model key {key}"
    return None


def keep_earlier(results: dict[str, Any], earlier: dict[str, Any], source: str) -> int:
    """Copy into ``results`` the earlier cells it lacks, on datasets shown to be the same, at the same budget;
    returns how many were kept."""
    if earlier.get("budget", {}).get("updates_per_run") != results["budget"]["updates_per_run"]:
        print(f"--keep-earlier: {source} is at another budget; nothing kept")
        return 0
    kept = 0
    for dataset_id, cells in earlier.get("results", {}).items():
        if dataset_id not in results["results"]:  # a dataset this grid does not train: kept whole, if provably the same
            local = fingerprint_of(dataset_id)  # loads the whole dataset: once
            if local is None:
                print(f"--keep-earlier: {dataset_id} is not on this machine; its cells are not kept")
                continue
            results["results"][dataset_id] = {}
            results["fingerprints"][dataset_id] = local
            name = collection_name(dataset_id)
            results["behaviour"].setdefault(name, behaviour_record(name))
        missing = [algo for algo in cells if algo not in results["results"][dataset_id]]
        if not missing:
            continue
        fingerprint = results["fingerprints"][dataset_id]
        keys = [(found.get("dynamics_fit") or {}).get("key") for found in cells.values()]
        recorded = earlier.get("fingerprints", {}).get(dataset_id)
        evidence = None if fingerprint is None else same_dataset(dataset_id, fingerprint, recorded, keys)
        if evidence is None:
            print(f"--keep-earlier: {dataset_id} is not shown to be the dataset of {source}; not kept: {missing}")
            continue
        for algo in missing:
            cell = dict(cells[algo])
            cell["kept_from"] = cell.get("kept_from") or {"file": source, "command": earlier.get("command")}
            results["results"][dataset_id][algo] = cell
        kept += len(missing)
        print(f"--keep-earlier: {dataset_id}: kept {', '.join(missing)} from {source} ({evidence})")
    return kept


def cells_left_out(earlier: dict[str, Any], results: dict[str, Any]) -> list[str]:
    """``learner on dataset`` for each cell of the earlier file that ``results`` has not."""
    now = results["results"]
    return [
        f"{algo} on {dataset_id}"
        for dataset_id, cells in earlier.get("results", {}).items()
        for algo in cells
        if algo not in now.get(dataset_id, {})
    ]


def in_benchmark_order(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Datasets and learners in this benchmark's order (kept cells arrive after the grid's own)."""

    def rank(name: str, order: tuple[str, ...]) -> int:
        return order.index(name) if name in order else len(order)

    return {
        dataset_id: {algo: cells[algo] for algo in sorted(cells, key=lambda algo: rank(algo, ALGOS))}
        for dataset_id, cells in sorted(results.items(), key=lambda item: rank(item[0], DATASETS))
    }


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    name = args.name or f"quality-{args.steps}steps"
    folder = compare_folder(args.runs_dir, name)
    out = Path(args.out)
    earlier = json.loads(out.read_text()) if out.exists() else {}
    if not args.report_only:
        collect(args)
        warn_of_other_collections(args, earlier, out.name)
        compare(args, name)
    results = summarize(args, folder, started)
    kept = keep_earlier(results, earlier, out.name) if args.keep_earlier and earlier else 0
    if not args.keep_earlier and (dropped := cells_left_out(earlier, results)):
        print(
            f"{out} held cells this grid has no finished run for, now dropped: {', '.join(dropped)} "
            "(--keep-earlier keeps them)"
        )
    results["results"] = in_benchmark_order(results["results"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out} and {plot_quality(results, out.with_suffix('.png'), ALGOS)}")
    report = folder / "report.md"
    if kept:  # the compare report covers this grid's runs only: it would not describe the kept cells
        print(f"{out.with_suffix('.md')} left as it was: {report} covers only the runs on this machine")
    elif report.exists():
        shutil.copyfile(report, out.with_suffix(".md"))
        print(f"wrote {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
