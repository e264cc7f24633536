"""Run folders on an S3 URL (a real S3 server on loopback): train, eval, report, resume after a kill, locking."""

from __future__ import annotations

import os
import shutil
import signal
import socket
from pathlib import Path

import pytest
import torch

from mbrl_core.rollout_store import RolloutStore
from mbrl_core.storage import locate
from tests.workflows.test_kill9 import (
    DYNAMICS,
    MODEL_BASED,
    assert_same_weights,
    learner_weights,
    run_here,
    run_mbrl,
)
from workflows.cli import main
from workflows.remote_runs import working_copy
from workflows.runs import read_eval

QUICK = ["trainer.eval_every=20", "trainer.eval_episodes=1", "trainer.log_every=10", "trainer.checkpoint_every=20"]


@pytest.fixture
def runs_url(s3_bucket, tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("MBRL_RUN_CACHE", str(tmp_path / "working-copies"))
    return f"{s3_bucket}/runs"


def train_arguments(algo, name, runs_url, dataset, store, steps=60, resume=False) -> list[str]:
    settings = QUICK + ["hidden_sizes=[32,32]"] + (MODEL_BASED + DYNAMICS if algo == "mopo" else [])
    return (
        ["train", "--algo", algo, "--dataset", dataset, "--steps", str(steps), "--name", name, "--runs-dir", runs_url]
        + ["--dynamics-store", store, "--device", "cpu", "--no-progress"]
        + [part for setting in settings for part in ("--set", setting)]
        + (["--resume"] if resume else [])
    )


def downloaded_weights(url: str, folder: Path) -> dict[str, torch.Tensor]:
    locate(url).download(folder, keep=lambda relative: relative == "checkpoints/last.pt")
    return learner_weights(folder)


def test_a_model_based_run_on_s3_finishes_and_eval_and_report_read_it(
    runs_url, small_dataset_id, tiny_model, dynamics_store, capsys
):
    run_here(train_arguments("mopo", "mopo-s3", runs_url, small_dataset_id, dynamics_store))
    run = locate(runs_url).child("mopo-s3")
    assert {"config.yaml", "context.pt", "checkpoints/last.pt", "metrics.csv", "eval.json"} <= set(run.files())
    assert ".lock" not in run.names()
    assert read_eval(run.url)["steps"] == 60
    store = RolloutStore.open(run.child("rollouts.zarr").url)
    assert store.committed_rows > 0 and len(store.generations) >= 3
    assert "run: s3://" in capsys.readouterr().out

    assert main(["eval", run.url, "--episodes", "1"]) == 0
    assert "written s3://" in capsys.readouterr().out
    assert [name for name in run.names() if name.startswith("reeval-")]

    assert main(["report", runs_url]) == 0
    assert "report: s3://" in capsys.readouterr().out
    assert {"report.md", "report.html"} <= set(locate(runs_url).names())


def test_a_run_killed_on_s3_resumes_from_the_store_as_if_never_stopped(
    runs_url, small_dataset_id, dynamics_store, tmp_path
):
    run_here(train_arguments("bc", "straight", runs_url, small_dataset_id, dynamics_store, steps=40))
    killed_arguments = train_arguments("bc", "killed", runs_url, small_dataset_id, dynamics_store, steps=40)
    stopped = run_mbrl(killed_arguments, {"kind": "update", "at": 30})  # after the checkpoint of step 20
    assert stopped.returncode == -signal.SIGKILL, stopped.stderr[-2000:]
    killed = locate(runs_url).child("killed")
    assert "checkpoints/last.pt" in killed.files() and "eval.json" not in killed.files()
    assert ".lock" in killed.names()  # left by the killed process: this host sees it is gone and takes it over
    shutil.rmtree(working_copy(killed.url))  # this machine lost its working copy: the resume downloads the run
    run_here([*killed_arguments, "--resume"])
    assert read_eval(killed.url)["steps"] == 40 and ".lock" not in killed.names()
    assert_same_weights(
        downloaded_weights(f"{runs_url}/straight", tmp_path / "straight"),
        downloaded_weights(killed.url, tmp_path / "resumed"),
    )


def test_a_second_writer_is_refused_naming_the_holder(runs_url, small_dataset_id, dynamics_store, capsys):
    from mbrl_core.locks import try_lock_object

    held = try_lock_object(locate(runs_url).child("busy", ".lock"))
    assert held is not None
    try:
        assert main(train_arguments("bc", "busy", runs_url, small_dataset_id, dynamics_store)) == 2
    finally:
        held.release()
    message = capsys.readouterr().err
    assert f"is being written by process {os.getpid()} on {socket.gethostname()}" in message
    assert not locate(runs_url).child("busy").files()


def test_a_finished_run_on_s3_is_never_started_over(runs_url, small_dataset_id, dynamics_store, capsys):
    arguments = train_arguments("bc", "done", runs_url, small_dataset_id, dynamics_store, steps=20)
    run_here(arguments)
    before = {name: locate(runs_url).child("done", name).read_bytes() for name in ("eval.json", "checkpoints/last.pt")}
    assert main(arguments) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    assert main([*arguments, "--resume"]) == 0
    assert "had already finished" in capsys.readouterr().out
    after = {name: locate(runs_url).child("done", name).read_bytes() for name in before}
    assert after == before


def test_resuming_a_run_that_is_not_on_the_store_is_refused(runs_url, small_dataset_id, dynamics_store, capsys):
    arguments = train_arguments("bc", "never", runs_url, small_dataset_id, dynamics_store, resume=True)
    assert main(arguments) == 2
    assert "no run to resume at s3://" in capsys.readouterr().err
