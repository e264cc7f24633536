"""The rollout store on an S3 URL (a real S3 server on loopback): the same commits and checks as on a local disk."""

from __future__ import annotations

import pytest

from mbrl_core.errors import ArtifactError
from mbrl_core.rollout_store import BackgroundWriter, RolloutStore
from mbrl_core.storage import locate
from tests.mbrl_core.test_rollout_store import assert_same, make_generation, new_store


def test_generations_appended_on_s3_read_back_after_reopening(s3_bucket):
    url = f"{s3_bucket}/run/rollouts.zarr"
    writer = BackgroundWriter(new_store(url))
    written = [make_generation(0), make_generation(1, rows=50)]
    for generation in written:
        writer.submit(generation)
    writer.close()
    appender = RolloutStore.open(url, mode="a")
    written.append(make_generation(2, rows=5))
    appender.append(written[2])
    reader = RolloutStore.open(url)
    assert reader.committed_rows == 37 + 50 + 5 and [g["number"] for g in reader.generations] == [0, 1, 2]
    for generation in written:
        assert_same(generation, reader.read_generation(generation.number))


def test_rows_written_but_not_committed_are_cut_off_on_s3(s3_bucket):
    url = f"{s3_bucket}/r.zarr"
    store = new_store(url)
    store.append(make_generation(0))
    store.truncate(keep_below=0)  # the commit record forgets generation 0 and its rows are dropped
    store.append(make_generation(0, rows=9, seed=5))
    reader = RolloutStore.open(url)
    assert reader.committed_rows == 9
    assert_same(make_generation(0, rows=9, seed=5), reader.read_generation(0))


def test_a_deleted_chunk_object_is_refused_by_its_generation_checksum(s3_bucket):
    url = f"{s3_bucket}/s.zarr"
    store = new_store(url)
    for number in range(3):
        store.append(make_generation(number))
    locate(url).child("rewards", "c", "2").remove()  # rows 32..47: the end of generation 0, the start of 1
    reopened = RolloutStore.open(url)
    assert_same(reopened.read_generation(2), make_generation(2))
    for number in (0, 1):
        with pytest.raises(ArtifactError, match=f"generation {number} .* does not match the checksum"):
            reopened.read_generation(number)


def test_no_store_is_created_over_data_whose_metadata_is_lost_on_s3(s3_bucket):
    url = f"{s3_bucket}/s.zarr"
    new_store(url).append(make_generation(0))
    locate(url).child("zarr.json").remove()
    before = locate(url).files()
    assert not RolloutStore.exists(url)
    with pytest.raises(ArtifactError, match="refusing to create a rollout store at s3://"):
        new_store(url)
    assert locate(url).files() == before
