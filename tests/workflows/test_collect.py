"""`mbrl collect`: a tiny D4RL-style collection writes all five datasets, exactly as specified, and resumes exactly."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import minari
import pytest
import torch

from mbrl_core.data import load_dataset
from mbrl_core.errors import ConfigError
from mbrl_core.locks import LockHeld, try_lock
from workflows.collect import (
    DATASET_KINDS,
    KIND_METADATA_KEY,
    STATE_FILE,
    CollectConfig,
    behaviour_warnings,
    choose_medium,
    collect,
    collection_dir,
)
from workflows.commands import collect as collect_command

TINY = dict(
    env_id="InvertedPendulum-v5",
    sac_steps=600,
    warmup_steps=200,
    batch_size=64,
    checkpoint_every=200,
    eval_episodes=3,
    random_transitions=400,
    medium_transitions=300,
    expert_transitions=500,
    device="cpu",
)
TINY_FLAGS = [
    "--env", "InvertedPendulum-v5", "--sac-steps", "600", "--warmup-steps", "200", "--batch-size", "64",
    "--checkpoint-every", "200", "--eval-episodes", "3", "--random-transitions", "400",
    "--medium-transitions", "300", "--expert-transitions", "500", "--device", "cpu",
]  # fmt: skip


def run_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    collect_command.add_arguments(parser)
    return collect_command.run(parser.parse_args(argv + ["--no-progress"]))


@pytest.fixture(scope="module")
def full(minari_root):
    """An uninterrupted collection, run through the command line."""
    assert run_command(TINY_FLAGS + ["--name", "test/full"]) == 0
    return collect(
        CollectConfig(name="test/full", **TINY), resume=True, progress=False
    )  # already finished: just the record


def transitions(dataset_id: str):
    return load_dataset(dataset_id, download=False)


def test_all_five_datasets_load_with_minari_and_carry_refs(full):
    record = full.record
    assert full.finished and record["status"] == "finished"
    sizes = {
        "random": 400,
        "medium": 300,
        "expert": 500,
        "medium-replay": record["medium"]["step"],
        "medium-expert": 800,
    }
    for kind in DATASET_KINDS:
        dataset = minari.load_dataset(f"test/full/{kind}-v0")
        assert dataset.total_steps == sizes[kind], kind
        assert dataset.storage.metadata["ref_min_score"] == pytest.approx(record["ref_min_score"])
        assert dataset.storage.metadata["ref_max_score"] == pytest.approx(record["ref_max_score"])
        assert dataset.env_spec.id == "InvertedPendulum-v5"
        assert dataset.storage.metadata[KIND_METADATA_KEY] == kind
        description = dataset.storage.metadata["description"]
        assert "seed 0" in description and "600 environment steps" in description
    assert record["ref_max_score"] == record["checkpoints"][-1]["return_mean"]  # the expert is the final policy
    assert [c["step"] for c in record["checkpoints"]] == [200, 400, 600]
    policies = sorted(p.name for p in (collection_dir("test/full") / "policies").iterdir())
    assert policies == ["step-000000200.pt", "step-000000400.pt", "step-000000600.pt"]
    for policy in policies:  # plain tensors and containers: loadable without unpickling code
        assert torch.load(collection_dir("test/full") / "policies" / policy, weights_only=True)["step"] > 0
    assert not (collection_dir("test/full") / STATE_FILE).exists()


def test_medium_replay_is_exactly_the_replay_buffer(minari_root, monkeypatch):
    # 600 SAC steps learn nothing, so the medium choice is forced to the middle checkpoint: the buffer goes on past it
    monkeypatch.setattr(
        "workflows.collect.recipe.choose_medium", lambda checkpoints, *args: {**checkpoints[1], "threshold": 0.0}
    )
    result = collect(CollectConfig(name="test/replay", **TINY), progress=False)
    medium_step = result.record["medium"]["step"]
    assert medium_step == 400 and result.replay_buffer.size == 600
    data = transitions("test/replay/medium-replay-v0")
    rows = {name: tensor[:medium_step] for name, tensor in result.replay_buffer.tensors.items()}
    assert len(data) == medium_step
    for name in ("observations", "actions", "rewards", "next_observations"):
        assert torch.equal(getattr(data, name), rows[name]), name
    assert torch.equal(data.terminals, rows["terminated"])
    cut = torch.zeros(medium_step)
    cut[-1] = 1.0 - rows["terminated"][-1]  # an episode running at the checkpoint ends as a timeout
    assert torch.equal(data.timeouts, torch.maximum(rows["truncated"] * (1 - rows["terminated"]), cut))


def test_medium_expert_is_medium_followed_by_expert(full):
    union = transitions("test/full/medium-expert-v0")
    medium, expert = transitions("test/full/medium-v0"), transitions("test/full/expert-v0")
    for name in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts", "episode_starts"):
        assert torch.equal(getattr(union, name), torch.cat([getattr(medium, name), getattr(expert, name)])), name


def test_policy_datasets_sample_actions_inside_the_action_space(full):
    for kind in ("medium", "expert"):
        actions = transitions(f"test/full/{kind}-v0").actions
        assert actions.abs().max() <= 3.0 and actions.std() > 0  # stochastic, bounded by InvertedPendulum's [-3, 3]


def test_medium_is_the_first_checkpoint_reaching_the_fraction():
    checkpoints = [
        {"step": s, "return_mean": r} for s, r in [(10, -900.0), (20, -700.0), (30, -500.0), (40, -650.0), (50, -200.0)]
    ]
    # random -1000, expert -200: one third of the way is -1000 + 800/3 = -733.3
    medium = choose_medium(checkpoints, ref_min=-1000.0, ref_max=-200.0, fraction=1 / 3)
    assert medium["step"] == 20 and medium["threshold"] == pytest.approx(-1000 + 800 / 3)
    assert choose_medium(checkpoints, -1000.0, -200.0, fraction=0.6)["step"] == 30
    assert choose_medium(checkpoints, 0.0, -200.0, fraction=0.5)["step"] == 50  # nothing reaches: the final policy


def test_behaviour_warnings_say_when_medium_is_not_medium():
    checkpoints = [
        {"step": 10, "return_mean": 150.0},
        {"step": 20, "return_mean": 1000.0},
        {"step": 30, "return_mean": 1000.0},
    ]
    record = {"checkpoints": checkpoints, "ref_min_score": 0.0, "ref_max_score": 1000.0}
    record["medium"] = choose_medium(checkpoints, 0.0, 1000.0, 1 / 3)
    assert record["medium"]["step"] == 20
    assert [text.split(" (")[0] for text in behaviour_warnings(record, 1 / 3)] == ["the medium checkpoint"]
    record["medium"] = choose_medium(checkpoints, 0.0, 1000.0, 0.1)  # 150 is medium enough
    assert behaviour_warnings(record, 0.1) == []
    record.update(ref_min_score=2000.0, medium=choose_medium(checkpoints, 2000.0, 1000.0, 1 / 3))
    assert [text.split(" (")[0] for text in behaviour_warnings(record, 1 / 3)] == [
        "the final SAC policy",
        "no checkpoint before the last reached the medium threshold: medium uses the final policy",
    ]


def test_killed_collection_resumes_from_its_checkpoint_exactly(full):
    config = CollectConfig(name="test/killed", **TINY)
    stopped = collect(config, progress=False, stop_after_steps=470)
    assert not stopped.finished and not minari.list_local_datasets(prefix="test/killed")
    saved_step = torch.load(collection_dir("test/killed") / STATE_FILE, weights_only=True)["step"]
    assert 200 <= saved_step < 470  # saved at an episode end after a checkpoint, not at the kill
    resumed = collect(config, resume=True, progress=False)
    assert resumed.finished and resumed.resumed_from_step == saved_step
    assert resumed.record["resumed_from"] == [saved_step]
    assert resumed.record["checkpoints"] == full.record["checkpoints"]
    for kind in DATASET_KINDS:  # as if never stopped
        ours, theirs = transitions(f"test/killed/{kind}-v0"), transitions(f"test/full/{kind}-v0")
        assert torch.equal(ours.observations, theirs.observations) and torch.equal(ours.actions, theirs.actions), kind


def test_refusals_are_one_clear_line(full):
    with pytest.raises(ConfigError, match="is complete.*--resume.*--overwrite"):
        collect(CollectConfig(name="test/full", **TINY), progress=False)
    with pytest.raises(ConfigError, match="cannot name Minari datasets"):
        collect(CollectConfig(name="x", **TINY), progress=False)
    with pytest.raises(ConfigError, match="warmup_steps"):
        CollectConfig(name="test/bad", **{**TINY, "warmup_steps": 600})
    with pytest.raises(ConfigError, match="cannot create environment"):
        collect(CollectConfig(name="test/bad", **{**TINY, "env_id": "NoSuchEnv-v0"}), progress=False)
    with pytest.raises(ConfigError, match="unknown key"):
        run_command(TINY_FLAGS + ["--name", "test/bad", "--set", "no_such_key=1"])


def test_a_second_collection_of_one_name_at_once_is_refused(minari_root):
    holder = try_lock(collection_dir("test/busy").parent / ".collect.lock")  # a collection still running
    with pytest.raises(LockHeld, match="collection 'test/busy' is being written by process"):
        collect(CollectConfig(name="test/busy", **TINY), resume=True, progress=False)
    with pytest.raises(LockHeld):
        collect(CollectConfig(name="test/busy", **TINY), overwrite=True, progress=False)
    assert not collection_dir("test/busy").exists()
    holder.release()


def test_resume_with_other_settings_is_refused(minari_root):
    config = CollectConfig(name="test/changed", **TINY)
    collect(config, progress=False, stop_after_steps=50)  # before the first checkpoint: only the step-0 state exists
    with pytest.raises(ConfigError, match="sac_steps: 600 then, 800 now"):
        collect(CollectConfig(name="test/changed", **{**TINY, "sac_steps": 800}), resume=True, progress=False)
    assert torch.load(collection_dir("test/changed") / STATE_FILE, weights_only=True)["step"] == 0  # left intact


def test_resuming_a_finished_collection_labels_datasets_written_without_their_kind(full):
    metadata_path = Path(minari.load_dataset("test/full/medium-v0").storage.data_path) / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    del metadata[KIND_METADATA_KEY]  # as written before collect recorded the kind
    metadata_path.write_text(json.dumps(metadata))
    assert KIND_METADATA_KEY not in minari.load_dataset("test/full/medium-v0").storage.metadata
    collect(CollectConfig(name="test/full", **TINY), resume=True, progress=False)
    assert minari.load_dataset("test/full/medium-v0").storage.metadata[KIND_METADATA_KEY] == "medium"
