"""The Zarr rollout store: round trips, appends after reopening, crash safety, provenance, plain-zarr readability."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import zarr

from mbrl_core.errors import ArtifactError
from mbrl_core.rollout_store import BackgroundWriter, RolloutGeneration, RolloutStore

OBS_DIM, ACT_DIM = 4, 2
FEATURES = ["max_std_norm", "max_pairwise_disagreement"]


def make_generation(number: int, rows: int = 37, seed: int = 0) -> RolloutGeneration:
    g = torch.Generator().manual_seed(seed + number)
    return RolloutGeneration(
        number=number,
        policy_step=1000 * number,
        observations=torch.randn(rows, OBS_DIM, generator=g),
        actions=torch.rand(rows, ACT_DIM, generator=g) * 2 - 1,
        rewards=torch.randn(rows, generator=g),
        next_observations=torch.randn(rows, OBS_DIM, generator=g),
        terminals=(torch.rand(rows, generator=g) < 0.2).float(),
        rollout_ids=torch.randint(0, 10, (rows,), generator=g),
        step_indices=torch.randint(0, 5, (rows,), generator=g),
        uncertainty={name: torch.rand(rows, generator=g) for name in FEATURES},
    )


def new_store(url, chunk_rows: int = 16) -> RolloutStore:
    return RolloutStore.create(
        url,
        obs_dim=OBS_DIM,
        act_dim=ACT_DIM,
        uncertainty_names=FEATURES,
        metadata={"dynamics_key": "abc123", "horizon": 5, "batch_size": 10},
        chunk_rows=chunk_rows,
    )


def assert_same(first: RolloutGeneration, second: RolloutGeneration) -> None:
    assert first.number == second.number and first.policy_step == second.policy_step
    for name in ("observations", "actions", "rewards", "next_observations", "terminals", "rollout_ids", "step_indices"):
        assert torch.equal(getattr(first, name).to(getattr(second, name).dtype), getattr(second, name)), name
    assert set(first.uncertainty) == set(second.uncertainty)
    for name in first.uncertainty:
        assert torch.equal(first.uncertainty[name], second.uncertainty[name])


def test_round_trip_and_append_after_reopen(tmp_path):
    url = tmp_path / "rollouts.zarr"
    store = new_store(url)
    written = [make_generation(0), make_generation(1, rows=50)]
    for generation in written:
        store.append(generation)
    reopened = RolloutStore.open(url, mode="a")
    written.append(make_generation(2, rows=5))
    reopened.append(written[2])
    reader = RolloutStore.open(url)
    assert reader.committed_rows == 37 + 50 + 5
    assert [g["number"] for g in reader.generations] == [0, 1, 2]
    for generation in written:
        assert_same(generation, reader.read_generation(generation.number))


def test_metadata_records_provenance(tmp_path):
    store = new_store(tmp_path / "r.zarr")
    store.append(make_generation(3))
    meta = RolloutStore.open(tmp_path / "r.zarr").metadata
    assert meta["dynamics_key"] == "abc123" and meta["horizon"] == 5 and meta["batch_size"] == 10
    assert meta["schema_version"] == 1 and meta["created"] and meta["uncertainty_names"] == FEATURES
    assert RolloutStore.open(tmp_path / "r.zarr").generations[0]["policy_step"] == 3000


def test_plain_zarr_reads_it(tmp_path):
    url = tmp_path / "r.zarr"
    generation = make_generation(0)
    new_store(url).append(generation)
    group = zarr.open_group(str(url), mode="r")
    rows = group.attrs["committed_rows"]
    np.testing.assert_array_equal(group["observations"][:rows], generation.observations.numpy())
    np.testing.assert_array_equal(
        group["uncertainty/max_std_norm"][:rows], generation.uncertainty["max_std_norm"].numpy()
    )
    assert group["terminals"].dtype == np.bool_ and group["generations"][:rows].tolist() == [0] * rows


def test_fsspec_url_round_trip():
    url = "memory://rollout-store-test/r.zarr"
    generation = make_generation(0)
    new_store(url).append(generation)
    assert_same(generation, RolloutStore.open(url).read_generation(0))


def test_interrupted_append_leaves_whole_generations(tmp_path, monkeypatch):
    url = tmp_path / "r.zarr"
    store = new_store(url)
    first = make_generation(0)
    store.append(first)
    original = RolloutStore._write_rows
    calls = {"n": 0}

    def crash_on_fourth_array(self, name, start, values):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("killed mid-append")
        original(self, name, start, values)

    monkeypatch.setattr(RolloutStore, "_write_rows", crash_on_fourth_array)
    with pytest.raises(KeyboardInterrupt):
        store.append(make_generation(1))
    monkeypatch.setattr(RolloutStore, "_write_rows", original)
    # Some arrays are longer than the committed rows; a reader sees generation 0 only.
    assert zarr.open_group(str(url), mode="r")["observations"].shape[0] > len(first)
    reader = RolloutStore.open(url)
    assert [g["number"] for g in reader.generations] == [0]
    assert_same(first, reader.read_generation(0))
    # Appending again cuts the partial rows off and keeps the store consistent.
    appender = RolloutStore.open(url, mode="a")
    second = make_generation(1, rows=9)
    appender.append(second)
    assert_same(second, RolloutStore.open(url).read_generation(1))
    assert zarr.open_group(str(url), mode="r")["observations"].shape[0] == len(first) + 9


def test_killed_process_leaves_an_openable_store(tmp_path):
    url = tmp_path / "r.zarr"
    new_store(url).append(make_generation(0))
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(__import__("pathlib").Path(__file__).parent)!r})
        from test_rollout_store import make_generation
        from mbrl_core.rollout_store import RolloutStore
        original = RolloutStore._write_rows
        def die_midway(self, name, start, values):
            if name == "next_observations":
                os._exit(9)
            original(self, name, start, values)
        RolloutStore._write_rows = die_midway
        RolloutStore.open({str(url)!r}, mode="a").append(make_generation(1))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 9, result.stderr
    reader = RolloutStore.open(url)
    assert [g["number"] for g in reader.generations] == [0]
    assert_same(make_generation(0), reader.read_generation(0))


def test_truncate_drops_later_generations(tmp_path):
    store = new_store(tmp_path / "r.zarr")
    for number in range(3):
        store.append(make_generation(number))
    store.truncate(keep_below=1)
    assert [g["number"] for g in store.generations] == [0] and store.committed_rows == 37
    store.append(make_generation(1, rows=3))
    assert [g["number"] for g in RolloutStore.open(tmp_path / "r.zarr").generations] == [0, 1]


def test_background_writer_commits_in_order(tmp_path):
    store = new_store(tmp_path / "r.zarr")
    writer = BackgroundWriter(store)
    generations = [make_generation(n, rows=20 + n) for n in range(4)]
    for generation in generations:
        writer.submit(generation)
    writer.close()
    reader = RolloutStore.open(tmp_path / "r.zarr")
    assert [g["number"] for g in reader.generations] == [0, 1, 2, 3]
    for generation in generations:
        assert_same(generation, reader.read_generation(generation.number))


def test_writer_failure_is_reported(tmp_path):
    store = new_store(tmp_path / "r.zarr")
    writer = BackgroundWriter(store)
    broken = make_generation(0)
    broken.uncertainty.pop("max_std_norm")
    writer.submit(broken)
    with pytest.raises(ArtifactError, match="lacks uncertainty/max_std_norm"):
        writer.flush()
    writer.close()


def test_bad_paths_raise_one_line_errors(tmp_path):
    with pytest.raises(ArtifactError, match="no rollout store|cannot be opened|not a rollout store"):
        RolloutStore.open(tmp_path / "missing.zarr")
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(ArtifactError, match="not a rollout store"):
        RolloutStore.open(tmp_path / "plain.zarr")


def test_inspect_command_reports_size_provenance_and_histograms(tmp_path, capsys):
    import json

    from workflows.cli import main

    url = tmp_path / "r.zarr"
    store = new_store(url)
    generations = [make_generation(n, rows=40) for n in range(3)]
    for generation in generations:
        store.append(generation)
    assert main(["rollouts", "inspect", str(url), "--json", "--last", "2", "--plot", str(tmp_path / "h.png")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["committed_rows"] == 120 and summary["generations"] == 3 and summary["rows_summarized"] == 80
    assert summary["provenance"]["dynamics_key"] == "abc123" and summary["bytes_on_disk"] > 0
    rewards = torch.cat([g.rewards for g in generations[1:]])
    assert summary["histograms"]["rewards"]["count"] == 80
    assert summary["histograms"]["rewards"]["mean"] == pytest.approx(rewards.mean().item(), abs=1e-5)
    assert set(summary["histograms"]) == {"rewards", *FEATURES}
    assert (tmp_path / "h.png").stat().st_size > 0
    assert main(["rollouts", "inspect", str(url)]) == 0 and "max_std_norm" in capsys.readouterr().out
    assert main(["rollouts", "inspect", str(tmp_path / "missing.zarr")]) == 2


def test_a_deleted_or_changed_chunk_is_refused_by_its_generation_checksum(tmp_path):
    store = new_store(tmp_path / "s.zarr")
    for number in range(3):
        store.append(make_generation(number))
    chunk = tmp_path / "s.zarr" / "rewards" / "c" / "2"  # rows 32..47: generation 0 ends at 37, 1 starts there
    chunk.unlink()
    reopened = RolloutStore.open(tmp_path / "s.zarr")
    assert_same(reopened.read_generation(2), make_generation(2))  # untouched generations still read
    for number in (0, 1):
        with pytest.raises(ArtifactError, match=f"generation {number} .* does not match the checksum"):
            reopened.read_generation(number)


def test_a_truncated_chunk_is_refused_in_one_line(tmp_path):
    store = new_store(tmp_path / "s.zarr")
    store.append(make_generation(0))
    chunk = tmp_path / "s.zarr" / "observations" / "c" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:7])
    with pytest.raises(ArtifactError, match=r"is damaged: rows 0:37 cannot be read"):
        RolloutStore.open(tmp_path / "s.zarr").read_generation(0)


def test_no_store_is_created_over_an_existing_stores_data(tmp_path):
    url = tmp_path / "s.zarr"
    new_store(url).append(make_generation(0))
    (url / "zarr.json").unlink()
    files = sorted(path for path in url.rglob("*") if path.is_file())
    with pytest.raises(ArtifactError, match="refusing to create a rollout store at .*zarr.json missing or damaged"):
        new_store(url)
    assert sorted(path for path in url.rglob("*") if path.is_file()) == files


def test_an_interrupted_creation_is_created_again(tmp_path):
    url = tmp_path / "s.zarr"
    zarr.open_group(str(url), mode="w", zarr_format=3).create_array("rewards", shape=(0,), dtype="float32")
    assert not RolloutStore.exists(url)
    new_store(url).append(make_generation(0))
    assert RolloutStore.open(url).committed_rows == 37
