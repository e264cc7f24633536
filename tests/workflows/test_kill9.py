"""kill -9 during every writer, then the same command again: the result equals an uninterrupted one.

Each writer runs in a subprocess (``mbrl ...`` through :func:`child`) that sends itself SIGKILL at a chosen
point: after a given training update, just before an atomic file replace or rename lands (its temporary
written, the target not yet replaced), or in the middle of a rollout-generation append. The command is then
run again (``--resume`` where the command has one; in this process, which saves a second start-up) and its
result compared with an uninterrupted run: ``torch.equal`` on every weight, identical rollout stores (row
counts and the content checksum of every generation), identical datasets (fingerprints).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mbrl_core.data import load_dataset
from mbrl_core.rollout_store import RolloutStore
from tests.conftest import TINY_DYNAMICS

ROOT = Path(__file__).resolve().parents[2]
KILL_ENV = "MBRL_TEST_KILL_POINT"
QUICK = ["trainer.eval_every=10", "trainer.eval_episodes=1", "trainer.log_every=5", "trainer.checkpoint_every=10"]
MODEL_BASED = ["rollouts.batch_size=100", "rollouts.horizon=2", "rollouts.refresh_every=10"]
DYNAMICS = [f"dynamics.{name}={json.dumps(value)}" for name, value in TINY_DYNAMICS.items()]


# ------------------------------------------------------------------------------ the child process


def child() -> None:
    """``python -c 'from tests.workflows.test_kill9 import child; child()' <mbrl arguments>``: run the CLI,
    killing this process with SIGKILL at the point named in the environment (JSON)."""
    import torch as child_torch

    from workflows.cli import main

    child_torch.set_num_threads(1)
    point = os.environ.get(KILL_ENV)
    if point:
        install_kill_point(json.loads(point))
    sys.exit(main(sys.argv[1:]))


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def counting(original, at: int, matches=lambda *args: True, before: bool = True):
    """``original`` wrapped to die at its ``at``-th matching call (before or after the call itself)."""
    calls = 0

    def wrapped(*args, **kwargs):
        nonlocal calls
        if matches(*args):
            calls += 1
            if calls == at and before:
                die()
        result = original(*args, **kwargs)
        if calls == at and not before and matches(*args):
            die()
        return result

    return wrapped


def install_kill_point(point: dict) -> None:
    kind, at = point["kind"], point["at"]
    if kind == "replace":  # an atomic write whose temporary file is complete, the target not yet replaced
        os.replace = counting(os.replace, at, lambda src, dst: Path(dst).name == point["name"])
    elif kind == "rename":  # publishing a dynamics artifact: the staging folder is complete, not yet renamed
        os.rename = counting(os.rename, at, lambda src, dst: Path(dst).parent == Path(point["parent"]))
    elif kind == "update":  # just after a training update (and its periodic logging / checkpointing)
        from mbrl_core.trainer import OfflineTrainer

        periodic = OfflineTrainer._periodic

        def _periodic(self, *args, **kwargs):
            periodic(self, *args, **kwargs)
            if self.state.step == at:
                die()

        OfflineTrainer._periodic = _periodic
    elif kind == "append":  # in the middle of a rollout generation: some arrays grown and written, no commit
        from mbrl_core.rollout_store import RolloutStore as Store

        Store._write_rows = counting(Store._write_rows, at, before=False)
    elif kind == "fit_step":  # inside the dynamics ensemble's Lightning training
        from dynamics.lightning_module import EnsembleLightningModule

        EnsembleLightningModule.training_step = counting(EnsembleLightningModule.training_step, at)
    else:
        raise ValueError(kind)


def run_mbrl(arguments: list[str], kill: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop(KILL_ENV, None)
    if kill is not None:
        env[KILL_ENV] = json.dumps(kill)
    code = "from tests.workflows.test_kill9 import child; child()"
    command = [sys.executable, "-c", code, *map(str, arguments)]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def run_here(arguments: list[str]) -> None:
    """``mbrl arguments`` in this process (one thread, as in the child), which must succeed."""
    from workflows.cli import main

    assert main([str(part) for part in arguments]) == 0


def killed_then_rerun(first: list[str], again: list[str], kill: dict) -> None:
    """Run ``first`` in a subprocess until the kill point (it must be reached), then ``again`` to completion."""
    stopped = run_mbrl(first, kill)
    assert stopped.returncode == -signal.SIGKILL, f"the kill point {kill} was not reached:\n{stopped.stderr[-2000:]}"
    run_here(again)


# ------------------------------------------------------------------------------ comparisons


def learner_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    flat: dict[str, torch.Tensor] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, torch.Tensor):
            flat[prefix] = value
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}/{key}", item)

    walk("learner", state["learner"])
    return flat


def assert_same_weights(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    assert ours.keys() == theirs.keys() and ours
    different = [name for name in ours if not torch.equal(ours[name], theirs[name])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def evaluations(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "eval.json").read_text())["history"]


def store_content(url: Path) -> tuple[int, list[tuple]]:
    store = RolloutStore.open(url)
    records = [(g["number"], g["start"], g["stop"], g["policy_step"], g["checksum"]) for g in store.generations]
    for record in store.generations:
        store.read_generation(record["number"])  # every committed row reads back and matches its checksum
    return store.committed_rows, records


def assert_clean(folder: Path) -> None:
    """Nothing a killed writer left behind survives the rerun: no temporaries, staging, locks or fit checkpoints."""
    leftovers = [
        path.name
        for path in Path(folder).rglob(".*")
        if path.name.endswith(".tmp") or path.name.startswith((".staging-", ".lock", ".resume-"))
    ]
    assert not leftovers, leftovers


# ------------------------------------------------------------------------------ training (and rollout appends)


@pytest.fixture(scope="module")
def train_base(small_dataset_id, tiny_model, dynamics_store, tmp_path_factory):
    runs = tmp_path_factory.mktemp("kill9-runs")

    def arguments(algo: str, name: str, resume: bool = False) -> list[str]:
        settings = QUICK + ["hidden_sizes=[32,32]"] + (MODEL_BASED + DYNAMICS if algo == "mopo" else [])
        return (
            ["train", "--algo", algo, "--dataset", small_dataset_id, "--steps", "30", "--name", name]
            + ["--runs-dir", runs, "--dynamics-store", dynamics_store, "--device", "cpu", "--no-progress"]
            + [part for setting in settings for part in ("--set", setting)]
            + (["--resume"] if resume else [])
        )

    return runs, arguments


@pytest.fixture(scope="module")
def uninterrupted(train_base):
    runs, arguments = train_base
    for algo in ("bc", "mopo"):
        run_here(arguments(algo, f"{algo}-straight"))
    return runs


TRAINING_KILLS = [
    ("bc", {"kind": "update", "at": 5}),  # before the first checkpoint: the resume starts at step 0
    ("bc", {"kind": "update", "at": 15}),  # between checkpoints
    ("bc", {"kind": "replace", "name": "last.pt", "at": 2}),  # while the step-20 checkpoint lands
    ("bc", {"kind": "replace", "name": "eval.json", "at": 1}),  # while the final result lands
    ("mopo", {"kind": "append", "at": 12}),  # inside the append of generation 1 (after 3 of its arrays)
    ("mopo", {"kind": "update", "at": 25}),  # generation 2 committed after the step-20 checkpoint
    ("mopo", {"kind": "replace", "name": "last.pt", "at": 2}),
]


@pytest.mark.parametrize(
    "algo, kill",
    TRAINING_KILLS,
    ids=[f"{algo}-{kill['kind']}-{kill.get('name', '')}{kill['at']}" for algo, kill in TRAINING_KILLS],
)
def test_killed_training_resumes_to_the_uninterrupted_result(train_base, uninterrupted, algo, kill):
    runs, arguments = train_base
    name = f"{algo}-{kill['kind']}-{kill['at']}"
    killed_then_rerun(arguments(algo, name), arguments(algo, name, resume=True), kill)
    ours, theirs = runs / name, uninterrupted / f"{algo}-straight"
    assert_same_weights(learner_weights(ours), learner_weights(theirs))
    same = ("step", "return_mean", "return_std", "normalized_score")
    assert [{k: h[k] for k in same} for h in evaluations(ours)] == [
        {k: h[k] for k in same} for h in evaluations(theirs)
    ]
    if algo == "mopo":
        assert store_content(ours / "rollouts.zarr") == store_content(theirs / "rollouts.zarr")
    assert_clean(ours)


# ------------------------------------------------------------------------------ dynamics fit


@pytest.fixture(scope="module")
def dynamics_base(minari_root, tmp_path_factory):
    from workflows.embedded import build_noisy_inverted_pendulum

    dataset_id = build_noisy_inverted_pendulum("test/kill9/dynamics-v0", transitions=1000, seed=3)
    settings = [f"{name}={json.dumps(value)}" for name, value in TINY_DYNAMICS.items()] + ["max_epochs=4"]

    def arguments(store: Path) -> list[str]:
        return ["dynamics", "train", "--dataset", dataset_id, "--store", store, "--no-progress"] + [
            part for setting in settings for part in ("--set", setting)
        ]

    straight = tmp_path_factory.mktemp("kill9-dynamics-straight")
    run_here(arguments(straight))
    return arguments, straight


def artifact_tensors(store: Path) -> tuple[dict[str, torch.Tensor], dict]:
    (folder,) = [path for path in store.iterdir() if not path.name.startswith(".")]
    meta = json.loads((folder / "meta.json").read_text())
    return torch.load(folder / "weights.pt", weights_only=True)["ensemble"], meta


@pytest.mark.parametrize(
    ("kill", "resumed_after"),
    [
        ({"kind": "fit_step", "at": 5}, None),
        ({"kind": "replace", "name": "fit.ckpt", "at": 3}, 2),  # the third epoch's checkpoint never lands
        ({"kind": "rename", "at": 1}, 4),
    ],
    ids=["mid-fit", "between-epochs", "publish"],
)
def test_killed_dynamics_fit_reruns_to_the_uninterrupted_model(dynamics_base, tmp_path, capsys, kill, resumed_after):
    arguments, straight = dynamics_base
    store = tmp_path / "store"
    if kill["kind"] == "rename":
        kill = kill | {"parent": str(store)}
    killed_then_rerun(arguments(store), arguments(store), kill)
    resumed = f"resuming the interrupted fit after epoch {resumed_after}"
    assert (resumed in capsys.readouterr().out) == (resumed_after is not None)
    (ours, our_meta), (theirs, their_meta) = artifact_tensors(store), artifact_tensors(straight)
    assert_same_weights(ours, theirs)
    assert our_meta["elites"] == their_meta["elites"] and our_meta["key"] == their_meta["key"]
    assert_clean(store)


# ------------------------------------------------------------------------------ collect

COLLECT = [
    "collect", "--env", "InvertedPendulum-v5", "--sac-steps", "600", "--warmup-steps", "200", "--batch-size", "64",
    "--checkpoint-every", "200", "--eval-episodes", "3", "--random-transitions", "400",
    "--medium-transitions", "300", "--expert-transitions", "500", "--device", "cpu", "--no-progress",
]  # fmt: skip
KINDS = ("random", "medium", "medium-replay", "expert", "medium-expert")


@pytest.fixture(scope="module")
def collect_straight(minari_root):
    run_here(COLLECT + ["--name", "kill9/straight"])
    return "kill9/straight"


@pytest.mark.slow
@pytest.mark.parametrize("at", [1, 2], ids=["first-state", "second-state"])
def test_killed_collect_resumes_to_the_uninterrupted_datasets(collect_straight, at):
    name = f"kill9/state-{at}"
    killed_then_rerun(
        COLLECT + ["--name", name],
        COLLECT + ["--name", name, "--resume"],
        {"kind": "replace", "name": "state.pt", "at": at},
    )
    for kind in KINDS:
        ours, theirs = load_dataset(f"{name}/{kind}-v0"), load_dataset(f"{collect_straight}/{kind}-v0")
        assert ours.fingerprint == theirs.fingerprint, kind
