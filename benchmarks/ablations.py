"""Single-setting ablations beside the quality grid (not a test): the runs behind the README's findings.

Each ablation is one learner on one of ``benchmarks/quality.py``'s datasets, at the grid's budget and with its
dynamics model, with a few settings changed by ``--set``. This script trains the missing ones (``mbrl train``,
resumable), checks that every run's recorded config holds the settings it claims, and writes
``benchmarks/results/quality_ablations.json``:

    MINARI_DATASETS_PATH=... python benchmarks/ablations.py --runs-dir runs/ablations          # train and collect
    python benchmarks/ablations.py --runs-dir runs/ablations --report-only                     # collect only

``--only NAME ...`` trains just those ablations; ``--keep-earlier`` keeps the entries of the existing ``--out``
file whose runs are not here, where their dataset is shown to be the same (``quality.same_dataset``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# this folder holds a dynamics.py benchmark that would shadow the `dynamics` package
sys.path = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, for benchmarks.quality

from benchmarks.quality import fingerprint_of, same_dataset
from mbrl_core.config import parse_overrides
from workflows.runs import is_finished, read_eval, read_run_config

RESULTS = Path(__file__).resolve().parent / "results" / "quality_ablations.json"
STEPS = 30_000
# MOReL's rollouts before session 5 (configs/morel.yaml then): 5-step branches from 50,000 starts.
MOREL_HORIZON_5 = ("rollouts.horizon=5", "rollouts.batch_size=50000")
LONG_BUDGET = 100_000


@dataclass(frozen=True)
class Ablation:
    name: str
    algo: str
    dataset: str
    settings: tuple[str, ...]
    question: str
    steps: int = STEPS

    def command(self) -> list[str]:
        sets = [part for setting in self.settings for part in ("--set", setting)]
        head = ["mbrl", "train", "--algo", self.algo, "--dataset", self.dataset, "--steps", str(self.steps)]
        return [*head, "--seed", "0", *sets, "--device", "cpu"]


ABLATIONS = (
    Ablation(
        "mopo-halfcheetah_medium-replay-penalty0.1-s0",
        "mopo",
        "halfcheetah/medium-replay-v0",
        ("penalty=0.1",),
        "Is MOPO's low HalfCheetah medium-replay score its penalty (the source's 0.5 against 0.1)?",
    ),
    Ablation(
        "morel-hopper_medium-pessimism10-s0",
        "morel",
        "hopper/medium-v0",
        ("pessimism_coef=10", *MOREL_HORIZON_5),
        "Is MOReL's collapse on Hopper medium weak HALT (coefficient 3 against 10)?",
    ),
    *(
        Ablation(
            f"morel-{dataset.replace('/', '_').removesuffix('-v0')}-horizon{horizon}-s0",
            "morel",
            dataset,
            settings,
            "MOReL with 5-step branches (the default before session 5) against 25-step ones (the default now)",
        )
        for dataset in (
            "hopper/medium-v0",
            "hopper/medium-replay-v0",
            "halfcheetah/medium-replay-v0",
            "halfcheetah/medium-v0",
        )
        for horizon, settings in ((5, MOREL_HORIZON_5), (25, ("rollouts.horizon=25", "rollouts.batch_size=10000")))
        if not (horizon == 25 and dataset != "hopper/medium-v0")  # those are the quality grid's own cells
    ),
    *(
        Ablation(
            f"morel-{dataset.replace('/', '_').removesuffix('-v0')}-pessimism10-s0",
            "morel",
            dataset,
            ("pessimism_coef=10",),
            "Is MOReL's failure on HalfCheetah (MOPO 56.3 on the same model on medium) a HALT threshold set by the"
            " dataset's outliers (medium: max disagreement / 3 = 8.3, the median along the policy's path 3.0)?",
        )
        for dataset in ("halfcheetah/medium-v0", "halfcheetah/medium-replay-v0")
    ),
    *(
        Ablation(
            f"{algo}-halfcheetah_medium-replay-{LONG_BUDGET // 1000}k-s0",
            algo,
            "halfcheetah/medium-replay-v0",
            (),
            "Is the budget why MOPO and MOReL trail the model-free learners on HalfCheetah medium-replay, where the"
            " published results put MOPO far ahead? The same runs at 100,000 updates instead of 30,000",
            steps=LONG_BUDGET,
        )
        for algo in ("td3bc", "iql", "mopo", "morel")
    ),
    *(
        Ablation(
            f"cql-halfcheetah_medium-replay-policylr{lr}-15k-s0",
            "cql",
            "halfcheetah/medium-replay-v0",
            (f"actor_lr={lr}", f"alpha_lr={lr}"),
            "Is CQL's failure on HalfCheetah medium-replay (2.3 at 30,000 updates, its policy at the random level"
            f" throughout) CORL's policy lr 3e-5 at this budget? CORL's config with policy lr {lr} ({source}; it"
            " also drives the alpha optimizer), 15,000 updates: compare with the grid run's 3.2 at update 15,000",
            steps=15_000,
        )
        for lr, source in (
            ("3e-4", "the upper value the official README recommends for Gym"),
            ("1e-4", "the official code's default, aviralkumar2907/CQL d4rl/examples/cql_mujoco_new.py"),
        )
    ),
)


def check_settings(run: Path, ablation: Ablation) -> None:
    """The run's config.yaml must hold every setting the ablation claims (a run trained otherwise is refused)."""
    config = read_run_config(run)
    steps = config.get("trainer", {}).get("steps")
    if steps != ablation.steps:
        sys.exit(f"{run}: trained for {steps!r} updates, the ablation says {ablation.steps}")
    for section, values in parse_overrides(ablation.settings).items():
        for name, value in values.items():
            recorded = config.get(section, {}).get(name)
            if recorded != value:
                sys.exit(f"{run}: {section}.{name} is {recorded!r}, the ablation says {value!r}")


def train(runs_dir: Path, ablation: Ablation) -> None:
    run = runs_dir / ablation.name
    resume = ["--resume"] if run.exists() else []
    command = ablation.command() + ["--runs-dir", str(runs_dir), "--name", ablation.name, "--no-progress", *resume]
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True)


def result(run: Path, ablation: Ablation) -> dict[str, Any]:
    evaluation = read_eval(run)
    return {
        "question": ablation.question,
        "command": " ".join(ablation.command()),
        "steps": ablation.steps,
        "final_normalized_score": evaluation["final"]["normalized_score"],
        "final_return_mean": evaluation["final"]["return_mean"],
        "history": [[entry["step"], entry["normalized_score"]] for entry in evaluation.get("history", [])],
        "train_seconds": evaluation.get("train_seconds"),
        "dynamics": evaluation.get("dynamics"),
    }


def keep_earlier(results: dict[str, Any], earlier: dict[str, Any], fingerprints: dict[str, str | None]) -> None:
    """Copy into ``results`` the earlier entries it lacks whose dataset is shown to be the same."""
    for ablation in ABLATIONS:
        entry = earlier.get("runs", {}).get(ablation.name)
        if entry is None or ablation.name in results:
            continue
        on_dataset = [found for name, found in earlier["runs"].items() if dataset_of(name) == ablation.dataset]
        keys = [(found.get("dynamics") or {}).get("key") for found in on_dataset]
        fingerprint, recorded = fingerprints[ablation.dataset], earlier.get("fingerprints", {}).get(ablation.dataset)
        evidence = fingerprint and same_dataset(ablation.dataset, fingerprint, recorded, keys)
        if not evidence:
            print(f"{ablation.name}: its dataset is not shown to be the earlier one; not kept")
            continue
        results[ablation.name] = entry | {"kept_from_earlier_results": evidence}
        print(f"{ablation.name}: kept from the earlier results ({evidence})")


def dataset_of(name: str) -> str | None:
    return next((ablation.dataset for ablation in ABLATIONS if ablation.name == name), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", type=Path, required=True, help="where the ablation runs are (or go)")
    parser.add_argument("--report-only", action="store_true", help="collect finished runs, train nothing")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="train only these ablations")
    parser.add_argument("--keep-earlier", action="store_true", help="keep --out's entries of runs not here")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    unknown = set(args.only or ()) - {ablation.name for ablation in ABLATIONS}
    if unknown:
        sys.exit(f"no such ablation: {', '.join(sorted(unknown))}")
    results: dict[str, Any] = {}
    for ablation in ABLATIONS:
        run = args.runs_dir / ablation.name
        wanted = args.only is None or ablation.name in args.only
        if wanted and not args.report_only and not is_finished(run):
            train(args.runs_dir, ablation)
        if not is_finished(run):
            print(f"{ablation.name}: not finished, left out")
            continue
        check_settings(run, ablation)
        results[ablation.name] = result(run, ablation)
        print(f"{ablation.name}: final normalized score {results[ablation.name]['final_normalized_score']:.1f}")
    fingerprints = {dataset: fingerprint_of(dataset) for dataset in dict.fromkeys(a.dataset for a in ABLATIONS)}
    if args.keep_earlier and args.out.exists():
        keep_earlier(results, json.loads(args.out.read_text()), fingerprints)
    results = {ablation.name: results[ablation.name] for ablation in ABLATIONS if ablation.name in results}
    what = "single-setting ablations beside the quality grid (same datasets and dynamics models as its runs)"
    document = {"what": what, "grid_steps": STEPS, "fingerprints": fingerprints, "runs": results}
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
