"""Bad inputs a user can give the command line: each stops with exit code 2 and one line saying what is
wrong, runs no code from a file, and leaves every earlier result byte-identical (a finished model-free run,
a finished model-based run with its rollout store, the dynamics store and the datasets, made once here)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from dynamics.artifacts import artifact_key
from dynamics.config import make_dynamics_config
from mbrl_core.data import load_dataset
from mbrl_core.errors import ArtifactError
from mbrl_core.locks import exclusive
from mbrl_core.minari_writer import write_minari_dataset
from tests.conftest import TINY_DYNAMICS
from workflows.cli import main
from workflows.embedded import INVERTED_PENDULUM_ID as ENV_ID
from workflows.embedded import build_noisy_inverted_pendulum
from workflows.runs import is_finished, read_eval, train_run

QUICK = {"eval_every": 10, "eval_episodes": 1, "log_every": 10, "checkpoint_every": 10}
SMALL_NETS = {"hidden_sizes": [32, 32]}
MB_ROLLOUTS = {"batch_size": 100, "horizon": 2, "refresh_every": 10}
DYNAMICS_SETTINGS = [f"{name}={json.dumps(value)}" for name, value in TINY_DYNAMICS.items()]


def tree_digest(*folders: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folders`` (the lock files a writer removes again excluded)."""
    digest = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                digest[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest


def refused(capsys, argv: list[str], fragment: str) -> str:
    """Run ``mbrl argv``: exit code 2, exactly one ``error:`` line containing ``fragment``, no traceback."""
    code = main([str(part) for part in argv])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2, err
    assert len(errors) == 1 and fragment in errors[0], err
    assert "Traceback" not in err
    return errors[0]


def env_episodes(transitions: int, reward: float = 1.0) -> list[dict[str, np.ndarray]]:
    """One episode of ``transitions`` steps in the embedded task's spaces."""
    env = gym.make(ENV_ID)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    rng = np.random.default_rng(0)
    terminations = np.zeros(transitions, bool)
    truncations = np.zeros(transitions, bool)
    truncations[-1] = True
    return [
        {
            "observations": rng.normal(0, 0.1, (transitions + 1, obs_dim)),
            "actions": rng.uniform(-1, 1, (transitions, act_dim)),
            "rewards": np.full(transitions, reward),
            "terminations": terminations,
            "truncations": truncations,
        }
    ]


def write_dataset(dataset_id: str, transitions: int, reward: float = 1.0) -> str:
    write_minari_dataset(dataset_id, env_episodes(transitions, reward), env_id=ENV_ID, overwrite=True)
    return dataset_id


def data_file(minari_root: str, dataset_id: str) -> Path:
    return Path(minari_root) / dataset_id / "data" / "main_data.hdf5"


# ------------------------------------------------------------------------------ earlier results


@pytest.fixture(scope="module")
def earlier(tmp_path_factory, minari_root, small_dataset_id, tiny_model, dynamics_store):
    """Results made before any bad input: a finished BC run, a finished MOPO run (rollout store included)."""
    runs = tmp_path_factory.mktemp("runs")
    common = dict(steps=20, runs_dir=runs, progress=False, dynamics_store=dynamics_store)
    train_run("bc", small_dataset_id, run_name="done", overrides={"trainer": QUICK, "learner": SMALL_NETS}, **common)
    mopo = {"trainer": QUICK, "learner": SMALL_NETS, "rollouts": MB_ROLLOUTS, "dynamics": TINY_DYNAMICS}
    train_run("mopo", small_dataset_id, run_name="mopo-done", overrides=mopo, **common)
    file = runs / "a-file"
    file.write_text("not a folder")
    return {"runs": runs, "data": small_dataset_id, "store": dynamics_store, "file": file}


@pytest.fixture(autouse=True)
def earlier_results_are_untouched(earlier, minari_root):
    protected = (earlier["runs"] / "done", earlier["runs"] / "mopo-done", Path(earlier["store"]))
    before = tree_digest(*protected, Path(minari_root) / earlier["data"])
    yield
    assert tree_digest(*protected, Path(minari_root) / earlier["data"]) == before


def copy_run(earlier, name: str, new_name: str, unfinished: bool = True) -> Path:
    """A copy of an earlier run to damage; ``unfinished`` drops its eval.json so that --resume loads it."""
    copy = earlier["runs"] / new_name
    shutil.copytree(earlier["runs"] / name, copy)
    if unfinished:
        (copy / "eval.json").unlink()
    return copy


def train_args(earlier, *extra: str, algo: str = "bc") -> list[str]:
    return ["train", "--algo", algo, "--dataset", earlier["data"], "--runs-dir", earlier["runs"], "--no-progress"] + [
        part.format(**earlier) for part in extra
    ]


# ------------------------------------------------------------------------------ the table

TRAIN_CASES = [
    # (case, algo, extra arguments, message fragment)
    ("existing finished run", "bc", ["--name", "done"], "already holds a finished run; nothing is overwritten"),
    ("resume of a run that does not exist", "bc", ["--name", "never", "--resume"], "no run to resume"),
    ("resume with another algo", "iql", ["--name", "done", "--resume"], "resume it with --algo bc, not iql"),
    ("zero steps", "bc", ["--steps", "0"], "bc.trainer.steps must be at least 1"),
    ("negative steps", "bc", ["--steps", "-5"], "bc.trainer.steps must be at least 1"),
    ("zero batch size", "bc", ["--set", "trainer.batch_size=0"], "bc.trainer.batch_size must be at least 1"),
    ("zero eval_every", "bc", ["--set", "trainer.eval_every=0"], "bc.trainer.eval_every must be at least 1"),
    ("negative log_every", "bc", ["--set", "trainer.log_every=-1"], "bc.trainer.log_every must be at least 1"),
    ("zero checkpoint_every", "bc", ["--set", "trainer.checkpoint_every=0"], "checkpoint_every must be at least 1"),
    ("zero eval_episodes", "bc", ["--set", "trainer.eval_episodes=0"], "bc.trainer.eval_episodes must be at least 1"),
    ("steps in --set", "bc", ["--steps", "10", "--set", "trainer.steps=1e3"], "--set trainer.steps: use --steps"),
    ("seed in --set", "bc", ["--set", "trainer.seed=3"], "--set trainer.seed: use --seed"),
    ("precision twice", "bc", ["--precision", "32", "--set", "trainer.precision=bf16"], "not both"),
    ("NaN learning rate", "iql", ["--set", "actor_lr=nan"], "iql.learner.actor_lr: cannot use 'nan'"),
    ("infinite learning rate", "iql", ["--set", "actor_lr=.inf"], "iql.learner.actor_lr: cannot use inf"),
    ("non-list hidden sizes", "bc", ["--set", "hidden_sizes=abc"], "bc.learner.hidden_sizes: cannot use 'abc'"),
    ("zero hidden width", "iql", ["--set", "hidden_sizes=[256,0]"], "hidden_sizes must be widths >= 1, not [256, 0]"),
    ("negative learning rate", "iql", ["--set", "actor_lr=-1"], "iql.learner: actor_lr must be > 0, not -1.0"),
    ("discount above 1", "iql", ["--set", "gamma=2"], "iql.learner: gamma must be in [0, 1], not 2.0"),
    ("expectile of 1", "iql", ["--set", "expectile=1"], "iql.learner: expectile must be in (0, 1), not 1.0"),
    ("negative Polyak rate", "td3bc", ["--set", "tau=-0.1"], "td3bc.learner: tau must be in (0, 1], not -0.1"),
    ("negative BC weight", "td3bc", ["--set", "alpha=-1"], "td3bc.learner: alpha must be >= 0, not -1.0"),
    ("negative CQL weight", "cql", ["--set", "cql_alpha=-5"], "cql.learner: cql_alpha must be >= 0, not -5.0"),
    ("negative MOPO penalty", "mopo", ["--set", "penalty=-1"], "mopo.learner: penalty must be >= 0, not -1.0"),
    ("log-std bounds crossed", "awac", ["--set", "log_std_min=3"], "log_std_min must be below log_std_max"),
    ("unknown key", "bc", ["--set", "trainer.stpes=10"], "unknown key(s) stpes in bc.trainer"),
    ("zero rollout horizon", "mopo", ["--set", "rollouts.horizon=0"], "mopo.rollouts.horizon must be at least 1"),
    ("real fraction above 1", "mopo", ["--set", "rollouts.real_fraction=2"], "real_fraction must be at most 1.0"),
    ("bogus device", "bc", ["--device", "bogus"], "unknown device 'bogus'"),
    ("runs dir that is a file", "bc", ["--runs-dir", "{file}"], "is a file, not a folder"),
    ("name leaving the runs folder", "bc", ["--name", "../escaped"], "--name '../escaped' must be one folder name"),
    ("name with a subfolder", "bc", ["--name", "a/b"], "--name 'a/b' must be one folder name"),
    ("empty name", "bc", ["--name", ""], "--name '' must be one folder name"),
    ("name '..'", "bc", ["--name", "..", "--resume"], "--name '..' must be one folder name"),
]


@pytest.mark.parametrize("case, algo, extra, fragment", TRAIN_CASES, ids=[case[0] for case in TRAIN_CASES])
def test_bad_train_input_is_refused_in_one_line(capsys, earlier, case, algo, extra, fragment):
    before = sorted(path.name for path in earlier["runs"].iterdir())
    outside = sorted(path.name for path in earlier["runs"].parent.iterdir())
    refused(capsys, train_args(earlier, *extra, algo=algo), fragment)
    assert sorted(path.name for path in earlier["runs"].iterdir()) == before  # no stray run folder either
    assert sorted(path.name for path in earlier["runs"].parent.iterdir()) == outside  # nor one beside it


@pytest.mark.parametrize("command", ["compare", "quickstart"])
@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--seeds", "0"], "--seeds must be at least 1 (got 0)"),
        (["--set", "trainer.seed=4"], "--set trainer.seed: use --seed (--seeds in a grid) instead"),
    ],
    ids=["zero seeds", "seed in --set"],
)
def test_grid_seeds_are_checked_before_anything_is_written(capsys, earlier, command, extra, fragment):
    before = sorted(path.name for path in earlier["runs"].iterdir())
    datasets = ["--datasets", earlier["data"]] if command == "compare" else []
    argv = [command, *datasets, "--algos", "bc", *extra, "--steps", "10", "--out", earlier["runs"]]
    refused(capsys, argv, fragment)
    assert sorted(path.name for path in earlier["runs"].iterdir()) == before


def test_a_runs_folder_the_system_cannot_make_stops_in_one_line(capsys, earlier):
    below_a_file = earlier["file"] / "runs"  # no one can make it, root included
    code = main([str(part) for part in train_args(earlier, "--runs-dir", str(below_a_file))])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err, err
    assert [line for line in err.splitlines() if line.startswith("error: ") and "Not a directory" in line], err


EVAL_CASES = [
    ("zero episodes", ["--episodes", "0"], "evaluation episodes must be at least 1"),
    ("env of other dimensions", ["--env", "Pendulum-v1"], "Pendulum-v1 environment has observations of shape (3,)"),
    ("unknown env", ["--env", "NoSuchEnv-v0"], "cannot create evaluation environment NoSuchEnv-v0"),
    ("bogus device", ["--device", "bogus"], "unknown device 'bogus'"),
]


@pytest.mark.parametrize("case, extra, fragment", EVAL_CASES, ids=[case[0] for case in EVAL_CASES])
def test_bad_eval_input_is_refused_in_one_line(capsys, earlier, case, extra, fragment):
    refused(capsys, ["eval", earlier["runs"] / "done", *extra], fragment)


def test_eval_of_a_folder_that_is_no_run(capsys, earlier):
    refused(capsys, ["eval", earlier["runs"]], "is not a run folder (no config.yaml)")


# ------------------------------------------------------------------------------ files that could run code


class RunsCode:
    """Unpickling this calls Path.touch on the marker: a file that executes code when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("file", ["context.pt", "checkpoints/last.pt"])
def test_a_crafted_pickle_in_a_run_folder_is_refused_and_never_run(capsys, earlier, tmp_path, file):
    copy = copy_run(earlier, "done", f"crafted-{file.replace('/', '-')}")
    marker = tmp_path / "code-ran"
    torch.save({"payload": RunsCode(marker)}, copy / file)
    refused(capsys, ["eval", copy], "could run code; only load files you trust")
    if file == "checkpoints/last.pt":  # resuming writes context.pt afresh; it loads the checkpoint
        refused(capsys, train_args(earlier, "--name", copy.name, "--resume"), "could run code")
    assert not marker.exists()


def test_a_config_without_algo_is_refused(capsys, earlier):
    copy = copy_run(earlier, "done", "no-algo")
    config = (copy / "config.yaml").read_text()
    (copy / "config.yaml").write_text("\n".join(line for line in config.splitlines() if not line.startswith("algo:")))
    refused(capsys, ["eval", copy], "records no algo")
    refused(capsys, train_args(earlier, "--name", copy.name, "--resume"), "records no algo")


# ------------------------------------------------------------------------------ a run being written


def test_a_second_writer_of_a_run_folder_is_refused_naming_the_holder(capsys, earlier):
    copy = copy_run(earlier, "done", "busy")
    with exclusive(copy / ".lock", "test"):
        line = refused(capsys, train_args(earlier, "--name", "busy", "--resume"), "is being written by process")
    assert str(__import__("os").getpid()) in line
    assert not (copy / "eval.json").exists()  # the refused writer wrote nothing


def test_leftover_temporaries_are_removed_at_the_next_start(capsys, earlier):
    copy = copy_run(earlier, "done", "killed-mid-write")
    leftovers = [copy / ".eval.json.abc123.tmp", copy / "checkpoints" / ".last.pt.xyz789.tmp"]
    for path in leftovers:
        path.write_bytes(b"half a file")
    assert main([str(part) for part in train_args(earlier, "--name", copy.name, "--resume")]) == 0
    assert not any(path.exists() for path in leftovers) and (copy / "eval.json").exists()


# ------------------------------------------------------------------------------ damaged rollout stores


def test_resume_refuses_a_rollout_store_without_zarr_json_and_keeps_its_chunks(capsys, earlier):
    copy = copy_run(earlier, "mopo-done", "mopo-no-zarr-json")
    (copy / "rollouts.zarr" / "zarr.json").unlink()
    before = tree_digest(copy / "rollouts.zarr")
    args = train_args(earlier, "--name", copy.name, "--resume", "--dynamics-store", "{store}", algo="mopo")
    refused(capsys, args, "refusing to create a rollout store")
    assert tree_digest(copy / "rollouts.zarr") == before


def _first_chunk(store: Path) -> Path:
    return next(path for path in sorted((store / "rewards").rglob("*")) if path.is_file() and path.name != "zarr.json")


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_resume_refuses_a_damaged_rollout_chunk(capsys, earlier, damage):
    copy = copy_run(earlier, "mopo-done", f"mopo-{damage}-chunk")
    chunk = _first_chunk(copy / "rollouts.zarr")
    if damage == "deleted":
        chunk.unlink()
    else:
        chunk.write_bytes(chunk.read_bytes()[:5])
    args = train_args(earlier, "--name", copy.name, "--resume", "--dynamics-store", "{store}", algo="mopo")
    refused(capsys, args, "is damaged")


def test_resume_refuses_rollouts_of_another_fit_of_its_dynamics_model(capsys, earlier):
    # As when the dynamics store lost the model and it was trained again (other weights under the same key).
    copy = copy_run(earlier, "mopo-done", "mopo-other-fit")
    group = copy / "rollouts.zarr" / "zarr.json"
    attributes = json.loads(group.read_text())
    assert len(attributes["attributes"]["dynamics_weights"]) == 16  # recorded when the run started
    attributes["attributes"]["dynamics_weights"] = "0123456789abcdef"
    group.write_text(json.dumps(attributes))
    args = train_args(earlier, "--name", copy.name, "--resume", "--dynamics-store", "{store}", algo="mopo")
    refused(capsys, args, "was generated by another fit of dynamics model")


# ------------------------------------------------------------------------------ datasets


def test_values_beyond_float32_are_refused_at_load(capsys, earlier, minari_root):
    dataset_id = write_dataset("test/bad/huge-reward-v0", 20, reward=1e300)
    refused(capsys, ["train", "--algo", "bc", "--dataset", dataset_id, "--runs-dir", earlier["runs"]], "float32")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_dataset_file_is_refused(capsys, earlier, minari_root, damage):
    dataset_id = write_dataset(f"test/bad/{damage}-v0", 50)
    path = data_file(minari_root, dataset_id)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2] if damage == "truncated" else bytes(len(content)))
    refused(capsys, ["train", "--algo", "bc", "--dataset", dataset_id, "--runs-dir", earlier["runs"]], "cannot be read")


# ------------------------------------------------------------------------------ dynamics artifacts


def dynamics_train(store, dataset_id: str) -> list:
    settings = [part for setting in DYNAMICS_SETTINGS for part in ("--set", setting)]
    return ["dynamics", "train", "--dataset", dataset_id, "--store", store, "--no-progress", *settings]


def test_a_model_from_too_few_transitions_is_not_published(capsys, earlier, tmp_path):
    dataset_id = write_dataset("test/bad/three-v0", 3)
    fragment = "3 transitions leave no holdout transitions (holdout_ratio 0.2); at least 5 transitions are needed"
    refused(capsys, dynamics_train(tmp_path, dataset_id), fragment)
    assert [path for path in tmp_path.iterdir() if not path.name.startswith(".")] == []


DYNAMICS_CASES = [
    ("patience=-1", "dynamics.patience must be at least 0, not -1"),
    ("max_epochs=0", "dynamics.max_epochs must be at least 1, not 0"),
    ("learning_rate=0", "dynamics.learning_rate must be positive, got 0.0"),
    ("ensemble_size=0", "dynamics.ensemble_size must be at least 1, not 0"),
    ("hidden_dim=0", "dynamics.hidden_dim must be at least 1, not 0"),
]


@pytest.mark.parametrize("setting, fragment", DYNAMICS_CASES, ids=[case[0] for case in DYNAMICS_CASES])
def test_a_dynamics_setting_out_of_range_is_refused_and_nothing_is_published(
    capsys, earlier, tmp_path, setting, fragment
):
    refused(capsys, [*dynamics_train(tmp_path, earlier["data"]), "--set", setting], fragment)
    assert [path for path in tmp_path.iterdir() if not path.name.startswith(".")] == []


def test_an_artifact_without_its_manifest_is_shown_broken_and_refused(capsys, earlier, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(earlier["store"], store)
    (key,) = [path.name for path in store.iterdir() if not path.name.startswith(".")]
    (store / key / "manifest.json").unlink()
    before = tree_digest(store)
    refused(capsys, dynamics_train(store, earlier["data"]), "unreadable manifest.json")
    assert tree_digest(store) == before  # not retrained over
    assert main(["dynamics", "list", "--store", str(store)]) == 0
    assert f"{key}  (corrupted)" in capsys.readouterr().out


def test_a_slot_holding_another_datasets_model_is_refused(capsys, earlier, tmp_path, tiny_model):
    other_id = build_noisy_inverted_pendulum("test/bad/other-v0", transitions=300, seed=7)
    fingerprint = load_dataset(other_id).fingerprint
    store = tmp_path / "store"
    shutil.copytree(earlier["store"], store)
    wrong_slot = artifact_key(fingerprint, make_dynamics_config(TINY_DYNAMICS, other_id).to_dict())
    shutil.copytree(store / tiny_model.key, store / wrong_slot)
    refused(capsys, dynamics_train(store, other_id), "its store slot holds another dataset's model")


def test_a_second_training_of_the_same_dynamics_slot_is_refused(capsys, earlier, tmp_path):
    dataset_id = write_dataset("test/bad/slot-v0", 200)
    key = artifact_key(load_dataset(dataset_id).fingerprint, make_dynamics_config(TINY_DYNAMICS, dataset_id).to_dict())
    with exclusive(tmp_path / f".lock-{key}", "test"):
        refused(capsys, dynamics_train(tmp_path, dataset_id), f"dynamics model {key} in {tmp_path} is being written")


def test_a_truncated_eval_json_is_refused_and_a_resume_writes_it_again(capsys, earlier):
    copy = copy_run(earlier, "done", "truncated-eval", unfinished=False)
    (copy / "eval.json").write_text((copy / "eval.json").read_text()[:40])
    with pytest.raises(ArtifactError, match="eval.json is damaged"):
        read_eval(copy)
    assert not is_finished(copy)
    assert main([str(part) for part in train_args(earlier, "--name", copy.name, "--resume")]) == 0
    assert read_eval(copy)["history"] == read_eval(earlier["runs"] / "done")["history"]
