"""Per-dataset settings resolve from what a dataset is (env family, kind), id patterns override them, --set wins,
and every run prints and records what it got."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

import dynamics.config as dynamics_config
from mbrl_core.config import (
    DatasetIdentity,
    dataset_identity,
    environment_family,
    parse_dataset_id,
    parse_overrides,
    resolve_algo_config,
    resolve_run_config,
)
from mbrl_core.errors import ConfigError
from mbrl_core.minari_writer import write_minari_dataset


def identity(dataset_id: str, family: str | None, kind: str | None) -> DatasetIdentity:
    return DatasetIdentity(dataset_id, family, kind, "test", "test")


@pytest.mark.parametrize(
    ("env_id", "family"),
    [("Hopper-v5", "hopper"), ("HalfCheetah-v5", "halfcheetah"), ("Walker2d-v4", "walker2d"), ("ns/Ant-v5", "ant")],
)
def test_environment_family_from_the_env_id(env_id, family):
    assert environment_family(env_id) == family


@pytest.mark.parametrize(
    ("dataset_id", "family", "kind"),
    [
        ("hopper/medium-replay-v0", "hopper", "medium-replay"),  # what `mbrl collect --name hopper` writes
        ("mujoco/hopper/medium-v0", "hopper", "medium"),  # Minari's remote datasets
        ("mujoco/walker2d/expert-v0", "walker2d", "expert"),
        ("hopper-medium-expert-v2", "hopper", "medium-expert"),  # D4RL spelling
        ("halfcheetah-random-v0", "halfcheetah", "random"),
        ("mujoco/hopper/simple-v0", "hopper", None),  # not one of the five kinds
        ("pendulum", None, None),
    ],
)
def test_family_and_kind_spelled_in_an_id(dataset_id, family, kind):
    assert parse_dataset_id(dataset_id) == (family, kind)


@pytest.fixture(scope="module")
def labelled_dataset(minari_root) -> str:
    """A dataset whose id says nothing: its env spec and its recorded kind say what it is."""
    import minari

    rng = np.random.default_rng(0)
    episode = {
        "observations": rng.normal(size=(11, 4)),
        "actions": rng.uniform(-1, 1, size=(10, 1)),
        "rewards": np.ones(10),
        "terminations": np.zeros(10, dtype=bool),
        "truncations": np.eye(10, dtype=bool)[-1],
    }
    write_minari_dataset("lab/robot-v0", [episode], env_id="InvertedPendulum-v5", overwrite=True)
    minari.load_dataset("lab/robot-v0").storage.update_metadata({"dataset_kind": "medium-replay"})
    return "lab/robot-v0"


def test_identity_comes_from_the_env_spec_and_the_recorded_kind(labelled_dataset):
    found = dataset_identity(labelled_dataset)
    assert (found.family, found.kind) == ("invertedpendulum", "medium-replay")
    assert found.family_from == "env spec InvertedPendulum-v5" and found.kind_from == "metadata"


def test_a_dataset_that_is_not_stored_locally_is_identified_by_its_id(minari_root):
    found = dataset_identity("nowhere/hopper/medium-replay-v0")
    assert (found.family, found.kind, found.family_from, found.kind_from) == ("hopper", "medium-replay", "id", "id")


def test_a_collected_hopper_dataset_gets_the_tuned_mopo_values():
    config, choice = resolve_run_config("mopo", identity("hopper/medium-v0", "hopper", "medium"))
    assert config["learner"]["penalty"] == 5.0 and config["rollouts"]["horizon"] == 5
    assert choice.summary() == (
        "mopo on hopper/medium-v0 (hopper/medium): penalty 5.0, horizon 5 "
        "(OfflineRL-Kit run_example/run_mopo.py, hopper-medium-v2)"
    )


def test_combo_medium_replay_gets_its_beta_whatever_the_id():
    for dataset_id in ("hopper/medium-replay-v0", "my-own-name"):
        config = resolve_algo_config("combo", identity(dataset_id, "hopper", "medium-replay"))
        assert config["learner"]["cql_alpha"] == 0.5


def test_an_id_pattern_is_more_specific_than_family_and_kind():
    # D4RL's own -v0 dataset: the official MOPO table and optimizer override OfflineRL-Kit's -v2 values.
    config, choice = resolve_run_config("mopo", identity("d4rl/hopper-medium-replay-v0", "hopper", "medium-replay"))
    assert config["learner"]["penalty"] == 1.0 and config["learner"]["actor_lr"] == 3e-4
    assert config["learner"]["target_entropy"] == -3.0 and config["learner"]["cosine_actor_lr"] is False
    assert [match.level for match in choice.matches] == [
        "hopper/medium-replay",
        "id pattern '*hopper-medium-replay-v0'",
    ]


def test_the_command_line_wins_over_every_level():
    overrides = parse_overrides(["penalty=0.25", "rollouts.horizon=2"])
    config, choice = resolve_run_config("mopo", identity("hopper-medium-v0", "hopper", "medium"), overrides)
    assert config["learner"]["penalty"] == 0.25 and config["rollouts"]["horizon"] == 2
    assert choice.summary(overrides).endswith("; --set wins: penalty 0.25, horizon 2")


def test_no_match_names_the_fallback():
    config, choice = resolve_run_config("mopo", identity("hopper/expert-v0", "hopper", "expert"))
    line = choice.summary()
    assert (
        "no per-dataset values for hopper/expert; fallback: configs/mopo.yaml defaults (penalty 1.0, horizon 5" in line
    )
    assert config["learner"]["penalty"] == 1.0
    unknown = resolve_run_config("morel", identity("x", None, None))[1].summary()
    assert "no per-dataset values for ?/?; fallback: configs/morel.yaml defaults (pessimism_coef 3.0" in unknown


def test_a_file_without_per_dataset_values_says_so():
    line = resolve_run_config("bc", identity("hopper/medium-v0", "hopper", "medium"))[1].summary()
    assert line.endswith("configs/bc.yaml has no per-dataset values (the same settings on every dataset)")


def write_dynamics_yaml(folder, extra: dict) -> None:
    base = yaml.safe_load((dynamics_config.configs_dir() / "dynamics.yaml").read_text())
    (folder / "dynamics.yaml").write_text(yaml.safe_dump(base | extra))


def test_the_dynamics_file_uses_the_same_resolver(tmp_path, monkeypatch):
    write_dynamics_yaml(
        tmp_path,
        {
            "per_dataset": {"walker2d": {"medium-replay": {"patience": 10, "source": "a test"}}},
            "dataset_ids": {"special/*": {"patience": 12, "source": "a test pattern"}},
        },
    )
    monkeypatch.setattr(dynamics_config, "configs_dir", lambda: tmp_path)
    assert (
        dynamics_config.make_dynamics_config(None, identity("w/medium-replay-v0", "walker2d", "medium-replay")).patience
        == 10
    )
    assert (
        dynamics_config.make_dynamics_config(
            None, identity("special/medium-replay-v0", "walker2d", "medium-replay")
        ).patience
        == 12
    )
    assert (
        dynamics_config.make_dynamics_config(
            {"patience": 3}, identity("special/x", "walker2d", "medium-replay")
        ).patience
        == 3
    )
    assert dynamics_config.make_dynamics_config(None, identity("h/medium-v0", "hopper", "medium")).patience == 5


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"per_dataset": {"hopper": {"meduim": {"patience": 3, "source": "x"}}}}, "unknown dataset kind 'meduim'"),
        ({"per_dataset": {"hopper": {"medium": {"patience": 3}}}}, "hopper/medium must name its 'source'"),
        ({"dataset_ids": {"x/*": 3}}, "entry 'x/\\*' must be a mapping"),
    ],
)
def test_malformed_per_dataset_entries_stop_with_one_clear_line(tmp_path, monkeypatch, entry, message):
    write_dynamics_yaml(tmp_path, entry)
    monkeypatch.setattr(dynamics_config, "configs_dir", lambda: tmp_path)
    with pytest.raises(ConfigError, match=message):
        dynamics_config.make_dynamics_config(None, identity("x/medium-v0", "hopper", "medium"))


def test_a_run_prints_and_records_its_per_dataset_values(small_dataset_id, tmp_path, capsys):
    from workflows.runs import train_run

    overrides = parse_overrides(["trainer.eval_episodes=1", "trainer.eval_every=1000", "trainer.log_every=5"])
    folder = train_run("bc", small_dataset_id, steps=5, overrides=overrides, runs_dir=tmp_path, progress=False)
    printed = capsys.readouterr().out.splitlines()
    record = yaml.safe_load((folder / "config.yaml").read_text())["per_dataset"]
    assert f"per-dataset: {record['summary']}" in printed
    assert record["family"] == "invertedpendulum" and record["family_from"] == "env spec InvertedPendulum-v5"
    assert record["summary"].startswith(f"bc on {small_dataset_id} (invertedpendulum/?)")
