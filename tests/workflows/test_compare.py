"""The grid runner end to end on a tiny grid (real runs through train_run): the report's numbers come
from the runs' eval files, the dynamics model is trained once per dataset, and compares resume."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from mbrl_core.atomic import save_yaml
from mbrl_core.config import read_yaml
from mbrl_core.errors import ConfigError
from workflows.compare import (
    RUNS_SUBDIR,
    CompareSpec,
    RunTask,
    refuse_shared_folders,
    report_compare,
    run_compare,
    run_log,
)
from workflows.embedded import DEFAULT_DATASET_ID
from workflows.executors import make_executor, threads_per_worker
from workflows.runs import read_eval

STEPS = 50
# Small networks, rollouts and dynamics model so a run takes seconds; every learner shares these overrides.
SMALL = {
    "learner": {"hidden_sizes": [32, 32]},
    "trainer": {"eval_every": 25, "eval_episodes": 2, "log_every": 25, "checkpoint_every": 25},
    "rollouts": {"batch_size": 200, "refresh_every": 25, "horizon": 2},
    "dynamics": {
        "ensemble_size": 3,
        "elites": 2,
        "hidden_dim": 32,
        "hidden_layers": 2,
        "weight_decays": [1e-5, 1e-5, 1e-5],
        "max_epochs": 3,
        "patience": 2,
    },
}


def spec_for(dataset_id: str, name: str, algos=("mopo", "bc"), seeds=(0, 1)) -> CompareSpec:
    return CompareSpec(name=name, datasets=(dataset_id,), algos=algos, seeds=seeds, steps=STEPS, overrides=SMALL)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("dynamics-store"))


@pytest.fixture(scope="module")
def grid(tmp_path_factory, small_dataset_id, store):
    """mopo and bc x 1 dataset x 2 seeds, trained once for the module."""
    runs_dir = tmp_path_factory.mktemp("runs")
    lines: list[str] = []
    outcome = run_compare(spec_for(small_dataset_id, "tiny"), runs_dir=runs_dir, dynamics_store=store, log=lines.append)
    return outcome, lines


def run_dirs(outcome, algo: str):
    return sorted((outcome.folder / RUNS_SUBDIR).glob(f"{algo}-*"))


def test_grid_trains_every_run(grid):
    outcome, _ = grid
    assert not outcome.failed
    assert sorted(outcome.trained) == sorted(
        f"{algo}-test_invertedpendulum_noisy-v0-s{seed}" for algo in ("mopo", "bc") for seed in (0, 1)
    )
    for run_dir in run_dirs(outcome, "*"):
        assert read_eval(run_dir)["steps"] == STEPS


def test_report_numbers_equal_the_runs_eval_files(grid, store):
    from dynamics.service import DynamicsService

    outcome, _ = grid
    data, paths = report_compare(outcome.folder)
    markdown = paths.markdown.read_text()
    for cell in data.cells:
        evaluations = [read_eval(run_dir) for run_dir in run_dirs(outcome, cell.algo)]
        finals = [e["final"]["normalized_score"] for e in evaluations]
        bests = [e["best"]["normalized_score"] for e in evaluations]
        assert cell.final_mean == pytest.approx(np.mean(finals))
        assert cell.final_std == pytest.approx(np.std(finals, ddof=1))
        assert cell.best_mean == pytest.approx(np.mean(bests))
        assert f"{np.mean(finals):.1f} ± {np.std(finals, ddof=1):.1f}" in markdown
        dynamics_seconds = 0.0
        if cell.model_based:
            dynamics_seconds = DynamicsService.load(evaluations[0]["dynamics"]["key"], store=store).metrics[
                "train_seconds"
            ]
        assert cell.wall_seconds == pytest.approx(np.mean([e["train_seconds"] + dynamics_seconds for e in evaluations]))
    assert data.dynamics[0].metrics["within_1_sigma"] is not None and "holdout MSE" in markdown
    assert paths.html.exists() and all(plot.exists() for plot in paths.plots)


def test_dynamics_model_is_trained_once_per_dataset(grid, small_dataset_id, store, tmp_path):
    from dynamics.artifacts import ArtifactStore

    outcome, lines = grid
    trained = outcome.dynamics[small_dataset_id]
    assert trained["was_cached"] is False
    assert sum("dynamics for" in line for line in lines) == 1
    for run_dir in run_dirs(outcome, "mopo"):
        assert read_eval(run_dir)["dynamics"]["key"] == trained["key"]
        assert read_eval(run_dir)["dynamics"]["reused"] is True  # pretrained before the run started
    # Another compare on the same data (two worker processes this time) finds the model in the store.
    other = run_compare(
        spec_for(small_dataset_id, "again", seeds=(0,)),
        runs_dir=tmp_path,
        workers=2,
        dynamics_store=store,
        log=lambda line: None,
    )
    assert not other.failed and other.dynamics[small_dataset_id] == {**trained, "was_cached": True}
    assert ArtifactStore(store).keys() == [trained["key"]]


def test_compare_resumes_without_redoing_finished_runs(grid, small_dataset_id, store, tmp_path):
    outcome, _ = grid
    runs_dir = tmp_path / "copy"
    folder = runs_dir / outcome.folder.name
    shutil.copytree(outcome.folder, folder)
    runs = folder / RUNS_SUBDIR
    stamps = {path.parent.name: path.stat().st_mtime_ns for path in runs.glob("*/eval.json")}
    interrupted = "bc-test_invertedpendulum_noisy-v0-s1"  # stopped after its last checkpoint
    history = read_eval(runs / interrupted)["history"]
    (runs / interrupted / "eval.json").unlink()
    never_started = "mopo-test_invertedpendulum_noisy-v0-s1"
    shutil.rmtree(runs / never_started)

    again = run_compare(
        spec_for(small_dataset_id, "tiny"), runs_dir=runs_dir, dynamics_store=store, log=lambda line: None
    )
    assert sorted(again.trained) == sorted([interrupted, never_started])
    assert len(again.skipped) == 2 and not again.failed
    for name in again.skipped:
        assert (runs / name / "eval.json").stat().st_mtime_ns == stamps[name]
    assert read_eval(runs / interrupted)["history"] == history  # resumed at its checkpoint, not retrained


def test_interrupted_grid_continues_where_it_stopped(small_dataset_id, store, tmp_path):
    spec = spec_for(small_dataset_id, "stop", algos=("bc",))

    def stop_after_first_run(line: str) -> None:
        if line.startswith("[1/2]"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_compare(spec, runs_dir=tmp_path, dynamics_store=store, log=stop_after_first_run)
    again = run_compare(spec, runs_dir=tmp_path, dynamics_store=store, log=lambda line: None)
    assert again.skipped == ["bc-test_invertedpendulum_noisy-v0-s0"]
    assert again.trained == ["bc-test_invertedpendulum_noisy-v0-s1"]


def test_a_compare_folder_keeps_its_budget(grid, small_dataset_id, store):
    outcome, _ = grid
    runs_dir = outcome.folder.parent
    changed = CompareSpec(
        name="tiny", datasets=(small_dataset_id,), algos=("bc",), seeds=(0,), steps=2 * STEPS, overrides=SMALL
    )
    with pytest.raises(ConfigError, match="steps"):
        run_compare(changed, runs_dir=runs_dir, dynamics_store=store)


def test_runs_started_under_other_settings_are_refused_not_mixed(grid, small_dataset_id, store, tmp_path):
    # As after a change to configs/<algo>.yaml: the grid would skip a finished run and resume an interrupted
    # one with their old settings, and report them beside runs trained with the new ones.
    outcome, _ = grid
    folder = tmp_path / outcome.folder.name
    shutil.copytree(outcome.folder, folder)
    runs = folder / RUNS_SUBDIR
    finished, interrupted = "mopo-test_invertedpendulum_noisy-v0-s0", "bc-test_invertedpendulum_noisy-v0-s1"
    (runs / interrupted / "eval.json").unlink()
    for name, section, key, old in ((finished, "rollouts", "horizon", 5), (interrupted, "learner", "actor_lr", 0.1)):
        config = read_yaml(runs / name / "config.yaml")
        config[section][key] = old
        save_yaml(config, runs / name / "config.yaml")
    record = (folder / "compare.json").read_text()

    with pytest.raises(ConfigError) as refused:
        run_compare(spec_for(small_dataset_id, "tiny"), runs_dir=tmp_path, dynamics_store=store)
    message = str(refused.value)
    assert f"{finished}: rollouts.horizon 5 -> 2" in message
    assert f"{interrupted}: learner.actor_lr 0.1 -> 0.0003" in message
    assert "2 run(s)" in message and "--name" in message
    assert not (runs / interrupted / "eval.json").exists()  # nothing trained
    assert (folder / "compare.json").read_text() == record


def grid_copy_with_dataset_record(grid, tmp_path, run: str, key: str, value: str) -> str:
    """Copy the module's grid into ``tmp_path`` with ``dataset.<key>`` of ``run``'s config.yaml set to ``value``;
    returns what it was."""
    outcome, _ = grid
    folder = tmp_path / outcome.folder.name
    shutil.copytree(outcome.folder, folder)
    config = read_yaml(folder / RUNS_SUBDIR / run / "config.yaml")
    was, config["dataset"][key] = config["dataset"][key], value
    save_yaml(config, folder / RUNS_SUBDIR / run / "config.yaml")
    return was


def test_runs_trained_on_other_contents_of_the_dataset_are_refused_not_mixed(grid, small_dataset_id, store, tmp_path):
    # As after `mbrl collect --overwrite` under the same name: finished runs on the old data would be skipped and
    # reported beside runs trained on the new data.
    earlier = "bc-test_invertedpendulum_noisy-v0-s0"
    current = grid_copy_with_dataset_record(grid, tmp_path, earlier, "fingerprint", "0123456789abcdef")
    with pytest.raises(ConfigError) as refused:
        run_compare(spec_for(small_dataset_id, "tiny"), runs_dir=tmp_path, dynamics_store=store)
    assert f"{earlier}: dataset fingerprint 0123456789abcdef -> {current}" in str(refused.value)
    assert "1 run(s)" in str(refused.value)


def test_a_run_folder_of_another_dataset_is_refused_not_mixed(grid, small_dataset_id, store, tmp_path):
    other = "bc-test_invertedpendulum_noisy-v0-s1"
    grid_copy_with_dataset_record(grid, tmp_path, other, "id", "test_invertedpendulum/noisy-v0")  # same folder name
    with pytest.raises(ConfigError, match=f"{other}: holds a run on dataset test_invertedpendulum/noisy-v0, not "):
        run_compare(spec_for(small_dataset_id, "tiny"), runs_dir=tmp_path, dynamics_store=store)


def test_datasets_that_would_share_run_folders_are_refused():
    tasks = [RunTask("bc", dataset_id, 0, False) for dataset_id in ("a/b-v0", "a_b-v0")]
    with pytest.raises(ConfigError, match="datasets a/b-v0 and a_b-v0 would share the run folder bc-a_b-v0-s0"):
        refuse_shared_folders(tasks)
    refuse_shared_folders([RunTask("bc", "a/b-v0", 0, False), RunTask("iql", "a/b-v0", 0, False)])


def test_unknown_algorithm_is_refused_before_training(small_dataset_id, tmp_path):
    with pytest.raises(ConfigError, match="nope"):
        run_compare(spec_for(small_dataset_id, "bad", algos=("bc", "nope")), runs_dir=tmp_path)
    assert not (tmp_path / "compare-bad").exists()


@pytest.mark.parametrize("name", ["../escaped", "a/b", "", ".."])
def test_a_compare_name_that_is_not_one_folder_name_is_refused(small_dataset_id, tmp_path, name):
    runs = tmp_path / "runs"
    with pytest.raises(ConfigError, match="compare name .* must be one folder name"):
        run_compare(spec_for(small_dataset_id, name), runs_dir=runs)
    assert not runs.exists() and sorted(tmp_path.iterdir()) == [], "nothing is written, inside or beside runs"


def test_workers_share_the_cores():
    executor = make_executor(2)
    try:
        assert executor.submit(torch.get_num_threads).result() == threads_per_worker(2)
    finally:
        executor.shutdown()


def test_quickstart_and_report_commands(minari_root, store, tmp_path, capsys):
    from workflows.cli import main

    quick = [
        "--algos",
        "bc",
        "--seeds",
        "1",
        "--steps",
        "20",
        "--workers",
        "1",
        "--out",
        str(tmp_path),
        "--dynamics-store",
        store,
        "--set",
        "trainer.eval_every=10",
        "--set",
        "trainer.eval_episodes=1",
        "--set",
        "hidden_sizes=[16,16]",
    ]
    assert main(["quickstart", *quick]) == 0
    first = capsys.readouterr().out
    folder = tmp_path / "compare-quickstart-20steps"
    assert f"Results: {DEFAULT_DATASET_ID} (normalized score)" in first and f"report: {folder / 'report.html'}" in first
    assert main(["quickstart", *quick]) == 0  # the second time everything is found
    assert "1 of 1 runs already finished" in capsys.readouterr().out
    assert main(["report", str(folder)]) == 0
    assert "| bc " in capsys.readouterr().out


def test_learners_evaluated_differently_are_refused(small_dataset_id, tmp_path, monkeypatch):
    import workflows.compare as compare
    from mbrl_core.config import merge, resolve_algo_config

    def bc_evaluates_more_often(algo, dataset_id=None, overrides=None):
        config = resolve_algo_config(algo, dataset_id, overrides)
        return merge(config, {"trainer": {"eval_every": 7}}) if algo == "bc" else config

    monkeypatch.setattr(compare, "resolve_algo_config", bc_evaluates_more_often)
    with pytest.raises(ConfigError, match="evaluated differently"):
        run_compare(spec_for(small_dataset_id, "protocol"), runs_dir=tmp_path)


def test_a_runs_log_shows_each_line_while_the_run_trains(tmp_path):
    with run_log(str(tmp_path), "iql-x-s0"):
        print("step 5000: return 10.0 ± 1.0, normalized score 40.0")
        assert (tmp_path / "iql-x-s0" / "train.log").read_text().endswith("normalized score 40.0\n")
