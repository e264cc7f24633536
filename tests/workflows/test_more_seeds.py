"""The command a too-few-seeds verdict prints really adds seeds to the same compare folder."""

from __future__ import annotations

import json
import shlex
import threading
import time
from pathlib import Path

import pytest

import workflows.compare as compare_module
from mbrl_core.config import parse_overrides
from mbrl_core.locks import LockHeld, try_lock
from tests.workflows.fake_runs import fabricate_run
from workflows.cli import build_parser, main
from workflows.compare import RECORD_LOCK, CompareSpec, prepare_folder, report_compare
from workflows.report.more_seeds import add_seeds_command, literal
from workflows.report.verdict import MIN_SEEDS

OVERRIDES = {"trainer": {"eval_every": 500}, "learner": {"hidden_sizes": [64, 64], "lr": 1e-05}}


@pytest.fixture(autouse=True)
def empty_dynamics_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MBRL_DYNAMICS_STORE", str(tmp_path / "no-dynamics-here"))


@pytest.mark.parametrize("value", [1e-05, 0.5, 3, [64, 64], "1e-5", "relu", None, True, {"a": 1}])
def test_override_values_survive_the_command_line(value):
    assert parse_overrides([f"rollouts.key={literal(value)}"]) == {"rollouts": {"key": value}}


def spec_from_command(command: str) -> tuple[CompareSpec, str]:
    """What `mbrl compare` builds from the command (see workflows.commands.compare.run)."""
    words = shlex.split(command)
    assert words[:2] == ["mbrl", "compare"]
    args = build_parser().parse_args(words[1:])
    spec = CompareSpec(
        name=args.name,
        datasets=tuple(args.datasets),
        algos=tuple(args.algos),
        seeds=tuple(range(args.seeds)),
        steps=args.steps,
        overrides=parse_overrides(args.overrides),
    )
    return spec, args.out


def test_the_command_reopens_the_same_folder_with_more_seeds(tmp_path):
    runs_dir = tmp_path / "elsewhere"
    original = CompareSpec("hc", ("a/one-v0", "b/two-v0"), ("mopo", "iql"), (0,), 1000, OVERRIDES)
    folder = prepare_folder(original, runs_dir, dynamics_store=None)
    grid = json.loads((folder / "compare.json").read_text())

    spec, out = spec_from_command(add_seeds_command(folder, grid, MIN_SEEDS))
    assert Path(out) == runs_dir and spec.seeds == tuple(range(MIN_SEEDS))
    assert (spec.name, spec.datasets, spec.algos, spec.steps) == ("hc", original.datasets, original.algos, 1000)
    assert prepare_folder(spec, out, dynamics_store=None) == folder  # same budget and overrides: accepted


def test_the_default_runs_folder_needs_no_out(tmp_path):
    grid = {"name": "x", "datasets": ["d/e-v0"], "algos": ["bc"], "seeds": [0], "steps": 5, "overrides": {}}
    assert "--out" not in add_seeds_command(Path("runs") / "compare-x", grid, MIN_SEEDS)
    assert "--dynamics-store /s" in add_seeds_command(Path("runs/compare-x"), grid | {"dynamics_store": "/s"}, 3)


def test_a_plain_folder_of_runs_gets_the_train_command(tmp_path):
    assert add_seeds_command(tmp_path, None, MIN_SEEDS).startswith("mbrl train --algo <algo>")


def test_running_the_printed_command_trains_the_missing_seeds(small_dataset_id, tmp_path, monkeypatch, capsys):
    """Through the real CLI and grid runner; only the training itself is replaced by fabricated runs."""
    finals = {"mopo": [80.0, 82.0, 81.0], "bc": [40.0, 45.0, 41.0]}
    trained: list[str] = []

    def fake_train(task, steps, overrides, folder, device, dynamics_store):
        trained.append(task.name)
        final = finals[task.algo][task.seed]
        return str(fabricate_run(Path(folder), task.algo, task.dataset_id, task.seed, task.model_based, final))

    def fake_pretrain(task, device, dynamics_store):
        return {"key": "toy-dynamics", "was_cached": True, "train_seconds": 0.0}

    monkeypatch.setattr(compare_module, "train_task", fake_train)
    monkeypatch.setattr(compare_module, "pretrain_task", fake_pretrain)
    first = CompareSpec("grow", (small_dataset_id,), ("mopo", "bc"), (0,), 1000, {})
    folder = prepare_folder(first, tmp_path, dynamics_store=None)
    for algo, scores in finals.items():
        fabricate_run(folder, algo, small_dataset_id, 0, algo == "mopo", scores[0])

    data, _ = report_compare(folder)
    assert [comparison.verdict for comparison in data.verdicts] == ["too few seeds to tell (n = 1)"]
    assert data.add_seeds is not None

    assert main(shlex.split(data.add_seeds)[1:]) == 0
    assert sorted(trained) == sorted(
        f"{algo}-{small_dataset_id.replace('/', '_')}-s{seed}" for algo in finals for seed in (1, 2)
    )
    printed = capsys.readouterr().out
    assert "2 of 6 runs already finished" in printed
    assert "| model-based ahead |" in printed and "too few seeds" not in printed


def test_compares_adding_to_one_grid_at_once_lose_nothing(tmp_path):
    """Each compare adds its own seed to the same grid at the same moment: the record keeps all of them."""
    specs = [CompareSpec("shared", ("a/one-v0",), ("bc",), (seed,), 1000, {}) for seed in range(12)]
    start = threading.Barrier(len(specs))

    def add(spec):
        start.wait()
        prepare_folder(spec, tmp_path, dynamics_store=None)

    threads = [threading.Thread(target=add, args=(spec,)) for spec in specs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    grid = json.loads((tmp_path / "compare-shared" / "compare.json").read_text())
    assert sorted(grid["seeds"]) == list(range(12))


def test_a_compare_waits_for_the_record_lock_then_refuses_naming_its_holder(tmp_path, monkeypatch):
    folder = prepare_folder(CompareSpec("held", ("a/one-v0",), ("bc",), (0,), 1000, {}), tmp_path, None)
    more = CompareSpec("held", ("a/one-v0",), ("iql",), (0,), 1000, {})

    holder = try_lock(Path(folder) / RECORD_LOCK)  # another compare in the middle of rewriting the record
    threading.Timer(0.5, holder.release).start()
    began = time.monotonic()
    prepare_folder(more, tmp_path, None)
    assert time.monotonic() - began >= 0.4
    assert json.loads((Path(folder) / "compare.json").read_text())["algos"] == ["bc", "iql"]

    monkeypatch.setattr(compare_module, "RECORD_LOCK_WAIT_SECONDS", 0.2)
    holder = try_lock(Path(folder) / RECORD_LOCK)
    with pytest.raises(LockHeld, match="compare.json is being written by process"):
        prepare_folder(more, tmp_path, None)
    holder.release()
