"""The one trainer and run folders: exact resume, logs, eval.json, loading a policy back."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from mbrl_core.config import build_config
from mbrl_core.errors import ConfigError
from mbrl_core.learner import LearnerContext
from mbrl_core.sampler import RealSampler
from mbrl_core.seeding import seed_everything
from mbrl_core.trainer import OfflineTrainer, TrainerConfig
from policies.registry import get_learner
from workflows.runs import load_policy, read_eval, train_run

STEPS = 40


def make_trainer(algo: str, data, run_dir) -> OfflineTrainer:
    seed_everything(0)
    entry = get_learner(algo)
    context = LearnerContext.from_data(data, STEPS, data.device)
    learner = entry.learner_cls(build_config(entry.config_cls, {}, algo), context)
    config = TrainerConfig(steps=STEPS, batch_size=32, log_every=10, checkpoint_every=1000, seed=0)
    return OfflineTrainer(learner, RealSampler(data, 32, seed=0), config, run_dir=run_dir, progress=False)


def weights(learner) -> dict[str, torch.Tensor]:
    flat = {}

    def walk(prefix, value):
        if isinstance(value, torch.Tensor):
            flat[prefix] = value
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}", item)
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                walk(f"{prefix}.{index}", item)

    walk("", learner.state_dict())
    return flat


@pytest.mark.parametrize("algo", ["iql", "td3bc", "cql"])
def test_resumed_training_equals_straight_training(algo, small_data, tmp_path):
    straight = make_trainer(algo, small_data, tmp_path / "straight")
    straight.fit()

    interrupted = make_trainer(algo, small_data, tmp_path / "resumed")
    interrupted.fit(until=STEPS // 2 + 3)
    del interrupted
    torch.manual_seed(12345)  # a restarted process starts from other random state
    resumed = make_trainer(algo, small_data, tmp_path / "resumed")
    assert resumed.load_checkpoint()
    assert resumed.state.step == STEPS // 2 + 3
    resumed.fit()

    expected, actual = weights(straight.learner), weights(resumed.learner)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name


def test_train_run_writes_a_complete_run_folder(small_dataset_id, tmp_path):
    overrides = {"trainer": {"eval_every": 20, "log_every": 10, "eval_episodes": 2, "batch_size": 32}}
    run_dir = train_run(
        "bc", small_dataset_id, steps=STEPS, seed=1, overrides=overrides, runs_dir=tmp_path, progress=False
    )
    assert (run_dir / "config.yaml").exists() and (run_dir / "checkpoints" / "last.pt").exists()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    with open(run_dir / "metrics.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert [int(r["step"]) for r in rows if r.get("train/actor_loss")] == [10, 20, 30, 40]
    assert [int(r["step"]) for r in rows if r.get("eval/return_mean")] == [0, 20, 40]  # 0: the untrained policy
    record = read_eval(run_dir)
    assert record["finished"] and record["steps"] == STEPS and record["seed"] == 1 and record["model_based"] is False
    assert [h["step"] for h in record["history"]] == [0, 20, 40]
    assert record["final"] == record["history"][-1]
    assert record["best"]["normalized_score"] == max(h["normalized_score"] for h in record["history"])
    policy = load_policy(run_dir)
    obs = torch.zeros(3, 4)
    assert policy.act(obs).shape == (3, 1)


def test_train_run_resume_continues_an_interrupted_run(small_dataset_id, tmp_path, monkeypatch):
    overrides = {
        "trainer": {"eval_every": 1000, "log_every": 10, "checkpoint_every": 20, "eval_episodes": 1, "batch_size": 32}
    }
    straight = train_run(
        "iql",
        small_dataset_id,
        steps=STEPS,
        overrides=overrides,
        runs_dir=tmp_path,
        run_name="straight",
        progress=False,
    )

    # A crash at update 30: the last checkpoint is the one of update 20, metrics were logged up to 30.
    original_fit, original_save = OfflineTrainer.fit, OfflineTrainer.save_checkpoint

    def killed_fit(self, until=None):
        original_fit(self, until=30)
        raise KeyboardInterrupt

    def save_up_to_20(self):
        if self.state.step <= 20:
            original_save(self)

    monkeypatch.setattr(OfflineTrainer, "fit", killed_fit)
    monkeypatch.setattr(OfflineTrainer, "save_checkpoint", save_up_to_20)
    with pytest.raises(KeyboardInterrupt):
        train_run(
            "iql",
            small_dataset_id,
            steps=STEPS,
            overrides=overrides,
            runs_dir=tmp_path,
            run_name="killed",
            progress=False,
        )
    assert not (tmp_path / "killed" / "eval.json").exists()
    monkeypatch.setattr(OfflineTrainer, "fit", original_fit)
    monkeypatch.setattr(OfflineTrainer, "save_checkpoint", original_save)
    resumed = train_run(
        "iql", small_dataset_id, steps=STEPS, runs_dir=tmp_path, run_name="killed", resume=True, progress=False
    )

    a, b = weights(load_policy(straight)), weights(load_policy(resumed))
    assert all(torch.equal(a[name], b[name]) for name in a)
    with open(resumed / "metrics.csv") as stream:
        steps = [int(r["step"]) for r in csv.DictReader(stream) if r.get("train/updates_per_second")]
    assert steps == [10, 20, 30, 40]  # the row of update 30 was logged again, not twice
    assert json.loads((resumed / "eval.json").read_text())["steps"] == STEPS
    # The untrained policy was evaluated once, before the crash; the resumed run did not evaluate it again.
    assert [h["step"] for h in read_eval(resumed)["history"]] == [h["step"] for h in read_eval(straight)["history"]]
    assert [h["step"] for h in read_eval(resumed)["history"]] == [0, STEPS]


def test_metrics_are_averaged_over_the_steps_that_reported_them():
    from mbrl_core.trainer import MetricAverager

    averager = MetricAverager()
    averager.add({"critic_loss": torch.tensor(1.0)})
    averager.add({"critic_loss": torch.tensor(3.0), "actor_loss": torch.tensor(10.0)})
    averager.add({})
    assert averager.pop() == {"critic_loss": 2.0, "actor_loss": 10.0}
    assert averager.pop() == {}


class Diverging:
    """A learner whose loss turns NaN at update ``at`` (or whose weight turns NaN with finite losses)."""

    def __init__(self, at: int, break_weights: bool = False) -> None:
        self.weight = torch.zeros(3)
        self.updates, self.at, self.break_weights = 0, at, break_weights

    def update(self, batch) -> dict[str, torch.Tensor]:
        self.updates += 1
        broken = self.updates >= self.at
        if broken and self.break_weights:
            self.weight[0] = float("nan")
        return {"loss": torch.tensor(float("nan") if broken and not self.break_weights else 1.0)}

    def act(self, observations, deterministic: bool = True):
        return torch.zeros(observations.shape[0], 1)

    def state_dict(self):
        return {"weight": self.weight, "updates": self.updates}

    def load_state_dict(self, state) -> None:
        self.weight, self.updates = state["weight"], state["updates"]


@pytest.mark.parametrize("break_weights", [False, True], ids=["loss", "weights"])
def test_a_run_whose_training_diverges_stops_naming_the_step(small_data, tmp_path, break_weights):
    from mbrl_core.errors import TrainingError

    config = TrainerConfig(steps=40, batch_size=8, log_every=10, checkpoint_every=10, eval_every=1000)
    trainer = OfflineTrainer(
        Diverging(at=13, break_weights=break_weights),
        RealSampler(small_data, 8),
        config,
        run_dir=tmp_path,
        progress=False,
    )
    expected = "weights hold NaN/inf" if break_weights else r"train/loss = nan"
    with pytest.raises(TrainingError, match=rf"step 20.*{expected}.*last good checkpoint stays in"):
        trainer.fit()
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["state"]["step"] == 10


def test_checkpoints_load_with_weights_only(small_data, tmp_path):
    trainer = make_trainer("td3bc", small_data, tmp_path)
    trainer.fit(until=10)
    trainer.save_checkpoint()
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)  # no pickled objects
    assert set(checkpoint) == {"learner", "sampler", "state", "rng"}
    assert make_trainer("td3bc", small_data, tmp_path).load_checkpoint()


def test_metrics_survive_a_kill_while_a_resume_rewrites_them(tmp_path, monkeypatch):
    from lightning.fabric.loggers import CSVLogger

    from workflows.runs import make_loggers

    (tmp_path / "metrics.csv").write_text("step,train/loss\n10,1.0\n20,2.0\n30,3.0\n")
    replay = CSVLogger.log_metrics

    def killed_after_the_first_row(self, metrics, step=None):
        replay(self, metrics, step)
        raise KeyboardInterrupt  # stands in for kill -9: metrics.csv was deleted, one row written back

    monkeypatch.setattr(CSVLogger, "log_metrics", killed_after_the_first_row)
    with pytest.raises(KeyboardInterrupt):
        make_loggers(tmp_path, resume_step=20)
    monkeypatch.setattr(CSVLogger, "log_metrics", replay)
    make_loggers(tmp_path, resume_step=20)
    with open(tmp_path / "metrics.csv") as stream:
        assert [(r["step"], r["train/loss"]) for r in csv.DictReader(stream)] == [("10", "1.0"), ("20", "2.0")]
    assert not (tmp_path / ".metrics.csv.before-resume").exists()


class FakeClock:
    """perf_counter for the trainer: a minute passes at every reading."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 60.0
        return self.now


def checkpoint_steps(trainer: OfflineTrainer, monkeypatch) -> list[int]:
    """The steps at which ``trainer`` saves checkpoints, filled in as it trains."""
    saved_at: list[int] = []
    save = trainer.save_checkpoint

    def recording_save() -> None:
        saved_at.append(trainer.state.step)
        save()

    monkeypatch.setattr(trainer, "save_checkpoint", recording_save)
    return saved_at


def test_a_slow_run_is_checkpointed_by_time_at_log_steps(small_data, tmp_path, monkeypatch):
    monkeypatch.setattr("mbrl_core.trainer.time.perf_counter", FakeClock())
    by_time = make_trainer("bc", small_data, tmp_path / "run")
    by_time.config.checkpoint_minutes = 2.0  # checkpoint_every (1000) is never reached in 40 steps
    saved_at = checkpoint_steps(by_time, monkeypatch)
    by_time.fit()
    # every log step (10, 20, 30) comes minutes after the last checkpoint; the end always checkpoints
    assert saved_at == [10, 20, 30, 40]

    by_steps_only = make_trainer("bc", small_data, tmp_path / "steps-only")
    by_steps_only.config.checkpoint_minutes = None
    saved_at = checkpoint_steps(by_steps_only, monkeypatch)
    by_steps_only.fit()
    assert saved_at == [40]


def test_checkpoint_minutes_is_validated_where_the_config_is_built():
    assert build_config(TrainerConfig, {"checkpoint_minutes": None}, "trainer").checkpoint_minutes is None
    with pytest.raises(ConfigError, match="trainer.checkpoint_minutes"):
        build_config(TrainerConfig, {"checkpoint_minutes": 0}, "trainer")
