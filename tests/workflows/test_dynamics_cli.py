"""`mbrl dynamics train/list/show` on the embedded InvertedPendulum dataset, and the learned terminal head."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from workflows.cli import main

REPOSITORY = Path(__file__).resolve().parents[2]

TINY = [
    "ensemble_size=3",
    "elites=2",
    "hidden_dim=32",
    "hidden_layers=2",
    "weight_decays=[1.0e-5,1.0e-5,1.0e-5]",
    "max_epochs=3",
]


@pytest.fixture(autouse=True)
def isolated_store(monkeypatch, tmp_path):
    monkeypatch.setenv("MBRL_DYNAMICS_STORE", str(tmp_path / "store"))


def train(dataset_id: str, *extra: str) -> list[str]:
    arguments = ["dynamics", "train", "--dataset", dataset_id, "--no-progress", "--accelerator", "cpu"]
    for setting in TINY + list(extra):
        arguments += ["--set", setting]
    return arguments


def test_train_then_reuse_list_and_show(small_dataset_id, capsys, tmp_path):
    assert main(train(small_dataset_id)) == 0
    trained = capsys.readouterr().out
    assert trained.startswith("trained: ")
    key = trained.split()[1]
    assert main(train(small_dataset_id)) == 0
    assert capsys.readouterr().out.startswith(f"already trained: {key}")
    assert main(["dynamics", "list"]) == 0
    listing = capsys.readouterr().out
    assert key in listing and small_dataset_id in listing and "holdout_mse" in listing
    plot = tmp_path / "plot.png"
    assert main(["dynamics", "show", key[:6], "--plot", str(plot)]) == 0
    shown = capsys.readouterr().out
    assert (
        "InvertedPendulum-v5 healthy-state rule" in shown and "within_2_sigma" in shown and "open_loop_mse_h10" in shown
    )
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_user_errors_are_one_line(capsys):
    assert main(["dynamics", "show", "nosuchkey"]) == 2
    assert capsys.readouterr().err.startswith("error: no dynamics model 'nosuchkey'")
    assert main(["dynamics", "train", "--dataset", "x/y-v0", "--set", "patience"]) == 2


@pytest.mark.slow
def test_unknown_env_with_terminals_learns_a_terminal_head(tmp_path):
    from dynamics.service import DynamicsService
    from tests.dynamics.test_dynamics_service import linear_system_data

    data = linear_system_data(transitions=3000)
    data.terminals = (data.next_observations[:, 0] > 1.0).float()  # a state-dependent termination
    config = {
        "ensemble_size": 3,
        "elites": 2,
        "hidden_dim": 64,
        "hidden_layers": 2,
        "weight_decays": [1e-5] * 3,
        "learning_rate": 3e-3,
        "max_epochs": 40,
    }
    with pytest.warns(UserWarning, match="learning a terminal head"):
        service = DynamicsService.fit(data, config, store=tmp_path, progress=False)
    assert service.termination.kind == "learned"
    prediction = service.predict(data.observations, data.actions)
    assert (prediction.terminals == data.terminals).float().mean() > 0.95
    step = service.step(data.observations, data.actions, torch.Generator().manual_seed(0))
    assert (step.terminals == data.terminals).float().mean() > 0.9


def test_list_names_an_interrupted_fit(small_dataset_id, capsys, monkeypatch):
    from dynamics import lightning_module

    fit_one_epoch_then_fail = lightning_module.EpochCheckpoint.on_train_epoch_end

    def interrupted(self, trainer, module):
        fit_one_epoch_then_fail(self, trainer, module)
        raise RuntimeError("interrupted")

    monkeypatch.setattr(lightning_module.EpochCheckpoint, "on_train_epoch_end", interrupted)
    with pytest.raises(RuntimeError, match="interrupted"):
        main(train(small_dataset_id))
    capsys.readouterr()
    assert main(["dynamics", "list"]) == 0
    listing = capsys.readouterr().out
    assert listing.startswith("interrupted fit ") and "after epoch 1;" in listing and "resumes it" in listing
    monkeypatch.setattr(lightning_module.EpochCheckpoint, "on_train_epoch_end", fit_one_epoch_then_fail)
    assert main(train(small_dataset_id)) == 0
    assert "resuming the interrupted fit after epoch 1" in capsys.readouterr().out
    assert main(["dynamics", "list"]) == 0
    assert "interrupted fit" not in capsys.readouterr().out


def test_a_model_based_run_without_progress_fits_its_model_without_lightning_lines(small_dataset_id, tmp_path):
    """`mbrl train --no-progress` on a dataset with no stored model: the fit shows no bar, no banner and no line
    per epoch (Lightning 2.6 logs one at every checkpoint save whose `weights_only` is left to its default).
    In a new process: under pytest, Lightning's log lines go to pytest's handler instead of the terminal."""
    settings = [f"dynamics.{setting}" for setting in TINY] + [
        "trainer.eval_every=10", "trainer.eval_episodes=1", "trainer.log_every=5", "trainer.checkpoint_every=10",
        "rollouts.batch_size=100", "rollouts.horizon=2", "rollouts.refresh_every=10", "hidden_sizes=[32,32]",
    ]  # fmt: skip
    arguments = ["train", "--algo", "mopo", "--dataset", small_dataset_id, "--steps", "10", "--device", "cpu"]
    arguments += ["--runs-dir", str(tmp_path), "--no-progress"]
    arguments += [part for setting in settings for part in ("--set", setting)]
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), "MBRL_DYNAMICS_STORE": str(tmp_path / "store")}
    command = [sys.executable, "-m", "workflows.cli", *arguments]
    run = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    for lightning_line in ("weights_only", "GPU available", "TPU available", "Epoch 0"):
        assert lightning_line not in run.stdout + run.stderr
    assert "per-dataset: mopo on" in run.stdout  # the run's own lines still print
