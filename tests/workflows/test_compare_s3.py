"""`mbrl compare --out s3://...` against a real S3 server on loopback: the compare folder, its runs and the
report are on the store, a second call trains nothing, a run whose eval.json is gone from the store trains
again (alone), and the command that adds seeds keeps the URL and the executor."""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import shutil
import sys
import uuid
from pathlib import Path

import pytest

from mbrl_core.storage import locate
from tests.workflows.test_compare import SMALL, STEPS
from workflows.cli import build_parser, main
from workflows.compare import CompareSpec, run_compare
from workflows.remote_runs import working_copy
from workflows.report.more_seeds import add_seeds_command, literal

ALGOS = ("mopo", "bc")
SETTINGS = [f"{section}.{key}={literal(value)}" for section, values in SMALL.items() for key, value in values.items()]


@pytest.fixture(scope="module")
def grids_url(s3_endpoint, tmp_path_factory):
    """A bucket of its own for the module's grid, and a working-copy cache no other test shares."""
    import s3fs

    bucket = f"compare-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(endpoint_url=s3_endpoint).mkdir(bucket)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MBRL_RUN_CACHE", str(tmp_path_factory.mktemp("working-copies")))
        yield f"s3://{bucket}/grids"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("dynamics-store"))


def compare_arguments(dataset_id: str, out: str, store: str) -> list[str]:
    grid = ["--datasets", dataset_id, "--algos", *ALGOS, "--seeds", "1", "--steps", str(STEPS), "--name", "tiny"]
    options = ["--out", out, "--dynamics-store", store, "--device", "cpu", "--no-progress"]
    return ["compare", *grid, *options, *(word for setting in SETTINGS for word in ("--set", setting))]


def run_names(dataset_id: str) -> list[str]:
    return [f"{algo}-{dataset_id.replace('/', '_')}-s0" for algo in ALGOS]


@pytest.fixture(scope="module")
def s3_grid(grids_url, small_dataset_id, store):
    """The grid trained once through the CLI; returns its folder on the store and what the command printed."""
    printed = io.StringIO()  # a module fixture has no capsys
    with contextlib.redirect_stdout(printed):
        status = main(compare_arguments(small_dataset_id, grids_url, store))
    assert status == 0, printed.getvalue()
    return locate(grids_url).child("compare-tiny"), printed.getvalue()


def test_the_grid_runs_and_report_land_on_the_store(s3_grid, small_dataset_id, grids_url):
    folder, printed = s3_grid
    files = set(folder.files())
    for name in run_names(small_dataset_id):
        assert {f"runs/{name}/eval.json", f"runs/{name}/checkpoints/last.pt", f"runs/{name}/train.log"} <= files
        assert ".lock" not in folder.child("runs", name).names()
    assert "runs/mopo-test_invertedpendulum_noisy-v0-s0/rollouts.zarr/zarr.json" in files
    assert {"compare.json", "report.md", "report.html"} <= files
    assert f"report: {folder.url}/report.html" in printed
    record = json.loads(folder.child("compare.json").read_text())
    assert (record["out"], record["executor"], record["algos"]) == (grids_url, "local", list(ALGOS))
    # One seed: the report asks for more, with a command that reopens this folder on the store.
    add_seeds = next(line for line in folder.child("report.md").read_text().splitlines() if "mbrl compare" in line)
    assert f"--out {grids_url}" in add_seeds


def test_running_the_grid_again_trains_nothing(s3_grid, small_dataset_id, grids_url, store):
    folder, _ = s3_grid
    finished = {name: folder.child("runs", name, "eval.json").read_bytes() for name in run_names(small_dataset_id)}
    again = run_compare(spec(small_dataset_id), runs_dir=grids_url, dynamics_store=store, log=lambda line: None)
    assert again.folder == folder.url and again.trained == [] and again.dynamics == {} and not again.failed
    assert sorted(again.skipped) == sorted(run_names(small_dataset_id))
    assert {name: folder.child("runs", name, "eval.json").read_bytes() for name in finished} == finished


def test_a_run_without_eval_json_on_the_store_alone_trains_again(s3_grid, small_dataset_id, grids_url, store):
    folder, _ = s3_grid
    mopo, bc = run_names(small_dataset_id)
    kept = folder.child("runs", mopo, "eval.json").read_bytes()
    history = json.loads(folder.child("runs", bc, "eval.json").read_text())["history"]
    folder.child("runs", bc, "eval.json").remove()
    shutil.rmtree(working_copy(folder.child("runs", bc).url))  # resumed on a machine that never trained it
    log_before = folder.child("runs", bc, "train.log").read_bytes()

    again = run_compare(spec(small_dataset_id), runs_dir=grids_url, dynamics_store=store, log=lambda line: None)
    assert again.trained == [bc] and again.skipped == [mopo] and not again.failed
    assert json.loads(folder.child("runs", bc, "eval.json").read_text())["history"] == history  # from its checkpoint
    assert folder.child("runs", mopo, "eval.json").read_bytes() == kept
    log_after = folder.child("runs", bc, "train.log").read_bytes()
    assert len(log_after) > len(log_before) > 0 and log_after.startswith(log_before)  # continued, not replaced


@pytest.mark.slow  # a local Ray takes ~20 s to start on 2 cores
def test_the_ray_executor_writes_the_same_grid_on_the_store(s3_grid, small_dataset_id, grids_url, store, capsys):
    """A local Ray on loopback, started after the S3 endpoint and the caches are in the environment its workers
    inherit; the dynamics model is already in the store, so only the runs train."""
    pytest.importorskip("ray")
    from workflows.ray_executor import LOOPBACK_ONLY_VARIABLE

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(LOOPBACK_ONLY_VARIABLE, "0")
        import ray

        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        arguments = compare_arguments(small_dataset_id, grids_url, store)
        arguments[arguments.index("tiny")] = "tiny-ray"
        assert main([*arguments, "--executor", "ray"]) == 0, capsys.readouterr().err
    finally:
        ray.shutdown()
    folder, local_folder = locate(grids_url).child("compare-tiny-ray"), s3_grid[0]
    for name in run_names(small_dataset_id):
        ray_eval = json.loads(folder.child("runs", name, "eval.json").read_text())
        local_eval = json.loads(local_folder.child("runs", name, "eval.json").read_text())
        assert ray_eval["final"] == local_eval["final"]  # same seed, same model, one thread each: the same run
        assert folder.child("runs", name, "train.log").exists()
    assert json.loads(folder.child("compare.json").read_text())["executor"] == "ray"
    assert f"--out {grids_url}" in capsys.readouterr().out  # the add-seeds command, in the printed summary
    report = folder.child("report.md").read_text()
    assert "--executor ray" in next(line for line in report.splitlines() if "mbrl compare" in line)


def spec(dataset_id: str) -> CompareSpec:
    return CompareSpec(name="tiny", datasets=(dataset_id,), algos=ALGOS, seeds=(0,), steps=STEPS, overrides=SMALL)


def test_the_add_seeds_command_keeps_the_url_and_the_ray_executor():
    grid = {"name": "g", "datasets": ["d/e-v0"], "algos": ["bc"], "seeds": [0], "steps": 5, "overrides": {}}
    on_ray = grid | {"out": "s3://bucket/grids", "executor": "ray", "address": "ray://head:10001", "cpus_per_run": 2}
    # A report on a URL is built in a local download of the folder: the recorded URL wins over that path.
    args = build_parser().parse_args(shlex.split(add_seeds_command(Path("/tmp/x/compare-g"), on_ray, 3))[1:])
    assert (args.out, args.executor, args.address, args.cpus_per_run, args.seeds) == (
        "s3://bucket/grids",
        "ray",
        "ray://head:10001",
        2,
        3,
    )
    local = shlex.split(add_seeds_command(Path("runs/compare-g"), grid | {"out": "runs", "executor": "local"}, 3))
    assert "--executor" not in local and "--out" not in local


def test_a_url_without_its_filesystem_installed_is_one_clear_line(small_dataset_id, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "s3fs", None)  # `import s3fs` now fails as if the s3 extra were missing
    monkeypatch.delitem(sys.modules["fsspec.registry"]._registry, "s3", raising=False)  # its class, if imported
    assert main(compare_arguments(small_dataset_id, "s3://bucket/grids", "unused-store")) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: cannot open s3://bucket/grids: ") and "s3fs" in error and "\n" not in error
