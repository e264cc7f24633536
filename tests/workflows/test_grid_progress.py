"""The compare grid's live display: what it reads from run folders and workers, and the time it estimates."""

from __future__ import annotations

import io
import queue
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from workflows.grid_progress import EpochReporter, GridProgress, RunProgress, clock

HEADER = "step,train/loss,train/updates_per_second,eval/return_mean,eval/normalized_score\n"


def write_metrics(path, rows: list[str]) -> None:
    path.write_text(HEADER + "".join(row + "\n" for row in rows))


def test_a_run_is_read_from_its_metrics_file(tmp_path):
    metrics = tmp_path / "metrics.csv"
    run = RunProgress("bc-x-s0", "bc", 5000, metrics)
    run.update_from_metrics()  # no file yet: nothing known, nothing raised
    assert (run.step, run.score) == (0, None)
    write_metrics(metrics, ["1000,0.5,90,,", "1000,,,-300.0,41.5", "2000,0.4,95,,"])
    run.update_from_metrics()
    assert (run.step, run.score, run.score_label) == (2000, 41.5, "score")
    write_metrics(metrics, ["1000,0.5,90,-300.0,", "2000,0.4,95,,"])  # a dataset without reference scores
    run.seen_mtime = 0.0
    run.update_from_metrics()
    assert (run.score, run.score_label) == (-300.0, "return")


def grid_with(runs: list[RunProgress], capacity: int) -> GridProgress:
    progress = GridProgress(capacity, log=lambda line: None, enabled=False)
    progress.runs = {run.name: run for run in runs}
    return progress


def test_time_left_spreads_the_remaining_work_over_the_workers(tmp_path):
    now = time.monotonic()
    finished = RunProgress("a-s0", "a", 1000, tmp_path / "1", step=1000, state="done", started=now - 100, ended=now)
    running = RunProgress("a-s1", "a", 1000, tmp_path / "2", step=500, state="training", started=now - 50)
    queued = [RunProgress(f"b-s{seed}", "b", 1000, tmp_path / f"q{seed}") for seed in range(2)]
    grid = grid_with([finished, running, *queued], capacity=2)
    # a: 0.1 s per update, so 50 s left on the running run; b has not run: the mean speed of what ran (0.1 s)
    assert grid.run_seconds_left(running, now) == pytest.approx(50.0)
    assert grid.grid_seconds_left(now) == pytest.approx((50 + 100 + 100) / 2)
    lonely = grid_with([finished, running], capacity=2)
    assert lonely.grid_seconds_left(now) == pytest.approx(50.0)  # never less than the longest running run
    assert grid_with(queued, capacity=2).grid_seconds_left(now) is None  # nothing measured yet: no guess


def test_a_resumed_run_counts_its_speed_from_where_it_resumed(tmp_path):
    metrics = tmp_path / "metrics.csv"
    write_metrics(metrics, ["3000,0.5,90,,"])
    grid = GridProgress(1, log=lambda line: None, enabled=False)
    grid.add_run("bc-x-s0", "bc", 5000, tmp_path)
    grid.started("bc-x-s0")
    run = grid.runs["bc-x-s0"]
    assert run.first_step == 3000 and run.seconds_per_update(time.monotonic()) is None


def test_dynamics_epochs_reach_the_display_through_the_queue():
    events: queue.Queue = queue.Queue()
    reporter = EpochReporter(events, "dynamics for d")
    trainer = SimpleNamespace(current_epoch=6, max_epochs=400, callback_metrics={"holdout/mse_best_member": 0.25})
    reporter.on_train_epoch_end(trainer, None)
    grid = GridProgress(1, log=lambda line: None, events=events, enabled=False)
    grid.add_stage("dynamics for d")
    grid.started("dynamics for d")
    grid.poll()
    stage = grid.stages["dynamics for d"]
    assert (stage.epoch, stage.max_epochs, stage.holdout_mse) == (7, 400, 0.25)
    assert "epoch 7, holdout MSE 0.25 (stops early, at most 400)" in grid.active_lines()[0]
    grid.add_run("mopo-d-s0", "mopo", 1000, Path("nowhere"))
    grid.runs["mopo-d-s0"].started, grid.runs["mopo-d-s0"].step = time.monotonic() - 10, 100
    grid.runs["mopo-d-s0"].state = "training"
    assert grid.time_text().endswith("left after the dynamics models")
    grid.finished("dynamics for d")
    assert grid.time_text().endswith("left") and not grid.active_lines()[0].startswith("  dynamics")


def test_off_a_terminal_the_display_prints_progress_lines(tmp_path):
    write_metrics(tmp_path / "metrics.csv", ["1000,0.5,90,,", "1000,,,-300.0,41.5"])
    stream = io.StringIO()  # not a terminal
    messages: list[str] = []
    grid = GridProgress(2, log=messages.append, stream=stream, line_every=0.1)
    grid.add_run("iql-x-s0", "iql", 5000, tmp_path)
    grid.add_run("iql-x-s1", "iql", 5000, tmp_path / "elsewhere")
    with grid:
        grid.started("iql-x-s0")
        grid.message("a message")
        time.sleep(2.5)
    lines = stream.getvalue().splitlines()
    assert lines and all(line.startswith("progress: [0/2 runs]") for line in lines)
    assert "iql-x-s0: 1,000/5,000, score 41.5" in lines[-1] and "iql-x-s1" not in lines[-1]  # s1 is queued
    assert messages == ["a message"]


def test_clock():
    assert [clock(5), clock(65), clock(3725)] == ["0:05", "1:05", "1:02:05"]
