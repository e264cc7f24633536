"""`mbrl compare --executor ray` on a local Ray (loopback only, 2 CPUs): the same compare folder as the local
pool, the dynamics model trained once and shared, resume of unfinished runs only, failures kept to their runs,
and no Ray anywhere near the local pool."""

from __future__ import annotations

import importlib.util
import queue
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mbrl_core.errors import ConfigError
from tests.workflows.test_compare import SMALL, STEPS
from workflows.cli import main
from workflows.compare import RUNS_SUBDIR, CompareSpec, report_compare, run_compare
from workflows.grid_progress import STARTED_EVENT, GridProgress
from workflows.ray_executor import LOOPBACK_ONLY_VARIABLE
from workflows.runs import read_eval

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason='needs pip install -e ".[ray]"')
ALGOS = ("mopo", "bc")


@pytest.fixture(scope="module")
def local_ray(small_dataset_id):
    """One Ray for the module, listening on loopback only, started after the datasets' location is in the
    environment its workers inherit. The grids find it and use it instead of starting their own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(LOOPBACK_ONLY_VARIABLE, "0")  # read when Ray is first imported, here
        import ray

        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    assert ray.util.get_node_ip_address() == "127.0.0.1"
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("dynamics-store"))


def spec_for(dataset_id: str, overrides=SMALL) -> CompareSpec:
    return CompareSpec(name="tiny", datasets=(dataset_id,), algos=ALGOS, seeds=(0,), steps=STEPS, overrides=overrides)


@pytest.fixture(scope="module")
def ray_grid(local_ray, small_dataset_id, store, tmp_path_factory):
    lines: list[str] = []
    outcome = run_compare(
        spec_for(small_dataset_id),
        runs_dir=tmp_path_factory.mktemp("ray-runs"),
        dynamics_store=store,
        log=lines.append,
        executor="ray",
    )
    return outcome, lines


def folder_listing(folder: Path) -> list[str]:
    """What a compare folder holds, by relative path (run folders, their files, the report).

    TensorBoard names its event files after the time and process: only their folder is compared.
    """
    return sorted(
        str(path.relative_to(folder)) for path in folder.rglob("*") if not path.name.startswith("events.out.")
    )


def test_ray_grid_leaves_the_folder_and_report_the_local_pool_does(ray_grid, small_dataset_id, store, tmp_path):
    outcome, _ = ray_grid
    assert not outcome.failed and len(outcome.trained) == 2
    ray_report, _ = report_compare(outcome.folder)
    local = run_compare(spec_for(small_dataset_id), runs_dir=tmp_path, dynamics_store=store, log=lambda line: None)
    local_report, _ = report_compare(local.folder)

    assert folder_listing(outcome.folder) == folder_listing(local.folder)
    assert sorted(outcome.trained) == sorted(local.trained)
    assert [(cell.algo, len(cell.runs)) for cell in ray_report.cells] == [
        (cell.algo, len(cell.runs)) for cell in local_report.cells
    ]
    for name in outcome.trained:  # same seed, same model, one thread each: the same run
        ray_eval = read_eval(outcome.folder / RUNS_SUBDIR / name)
        local_eval = read_eval(local.folder / RUNS_SUBDIR / name)
        assert ray_eval["final"] == local_eval["final"] and ray_eval["steps"] == STEPS


def test_dynamics_model_is_pretrained_once_and_shared(ray_grid, small_dataset_id, store):
    from dynamics.artifacts import ArtifactStore

    outcome, lines = ray_grid
    trained = outcome.dynamics[small_dataset_id]
    assert trained["was_cached"] is False
    assert sum("dynamics for" in line for line in lines) == 1
    assert ArtifactStore(store).keys() == [trained["key"]]
    for run_dir in (outcome.folder / RUNS_SUBDIR).glob("mopo-*"):
        recorded = read_eval(run_dir)["dynamics"]
        assert recorded["key"] == trained["key"] and recorded["reused"] is True


def test_ray_resume_trains_only_the_unfinished_run(ray_grid, small_dataset_id, store, tmp_path):
    outcome, _ = ray_grid
    folder = tmp_path / outcome.folder.name
    shutil.copytree(outcome.folder, folder)
    runs = folder / RUNS_SUBDIR
    interrupted = f"bc-{small_dataset_id.replace('/', '_')}-s0"
    finished = f"mopo-{small_dataset_id.replace('/', '_')}-s0"
    history = read_eval(runs / interrupted)["history"]
    stamp = (runs / finished / "eval.json").stat().st_mtime_ns
    (runs / interrupted / "eval.json").unlink()

    again = run_compare(
        spec_for(small_dataset_id), runs_dir=tmp_path, dynamics_store=store, log=lambda line: None, executor="ray"
    )
    assert again.trained == [interrupted] and again.skipped == [finished] and not again.failed
    assert again.dynamics == {}  # every model-based run was finished: no model asked for
    assert (runs / finished / "eval.json").stat().st_mtime_ns == stamp
    assert read_eval(runs / interrupted)["history"] == history  # resumed at its checkpoint, not retrained


def test_a_failed_dynamics_model_fails_its_runs_only(local_ray, small_dataset_id, store, tmp_path):
    broken = {**SMALL, "dynamics": {**SMALL["dynamics"], "no_such_setting": 1}}
    outcome = run_compare(
        spec_for(small_dataset_id, broken),
        runs_dir=tmp_path,
        dynamics_store=store,
        log=lambda line: None,
        executor="ray",
    )
    mopo, bc = (f"{algo}-{small_dataset_id.replace('/', '_')}-s0" for algo in ALGOS)
    model = f"dynamics for {small_dataset_id}"
    assert outcome.trained == [bc] and sorted(outcome.failed) == sorted([model, mopo])
    assert outcome.failed[model].startswith("ConfigError: ") and "no_such_setting" in outcome.failed[model]
    assert outcome.failed[mopo] == f"its dynamics model failed ({outcome.failed[model]})"


def test_the_display_starts_a_run_when_its_task_says_so(tmp_path):
    events: queue.Queue = queue.Queue()
    display = GridProgress(2, events=events, enabled=False)
    display.add_run("bc-x-s0", "bc", 100, tmp_path / "bc-x-s0")
    display.add_run("bc-x-s1", "bc", 100, tmp_path / "bc-x-s1")
    display.finished("bc-x-s1")
    events.put(("bc-x-s0", STARTED_EVENT, None, None, None))
    events.put(("bc-x-s1", STARTED_EVENT, None, None, None))  # its start arrives after its end
    display.poll()
    assert display.runs["bc-x-s0"].state == "training" and display.runs["bc-x-s0"].started is not None
    assert display.runs["bc-x-s1"].state == "done"


def test_the_local_pool_imports_no_ray():
    code = "import sys, workflows.compare, workflows.commands.compare; print('ray' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def compare_command(dataset_id: str, out: Path, *extra: str) -> list[str]:
    grid = ["--datasets", dataset_id, "--algos", "bc", "--seeds", "1", "--steps", "5"]
    return ["compare", *grid, "--out", str(out), *extra]


def test_ray_not_installed_is_one_clear_line(small_dataset_id, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    assert main(compare_command(small_dataset_id, tmp_path, "--executor", "ray")) == 2
    assert capsys.readouterr().err.strip() == 'error: --executor ray needs Ray: pip install -e ".[ray]"'
    assert not list(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.parametrize("option", [["--address", "auto"], ["--cpus-per-run", "2"]])
def test_ray_options_without_ray_are_refused(small_dataset_id, tmp_path, capsys, option):
    assert main(compare_command(small_dataset_id, tmp_path, *option)) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: {option[0]} is for --executor ray") and "\n" not in error


def test_cpus_per_run_must_be_positive(small_dataset_id, tmp_path):
    with pytest.raises(ConfigError, match="--cpus-per-run must be at least 1"):
        run_compare(spec_for(small_dataset_id), runs_dir=tmp_path, executor="ray", cpus_per_run=0)
