"""The dynamics artifact store on an S3 URL (a real S3 server on loopback): publish, load, interrupted uploads."""

from __future__ import annotations

import pytest
import torch

from dynamics.artifacts import LOCK_PREFIX, MANIFEST, ArtifactStore
from dynamics.service import DynamicsService
from mbrl_core.errors import ArtifactError
from mbrl_core.locks import LockHeld, try_lock_object
from mbrl_core.storage import locate
from tests.conftest import TINY_DYNAMICS

QUICK = TINY_DYNAMICS | {"max_epochs": 2, "patience": 1}


@pytest.fixture
def store_url(s3_bucket, tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("MBRL_DYNAMICS_CACHE", str(tmp_path / "cache"))
    return f"{s3_bucket}/dynamics"


def same_weights(first: DynamicsService, second: DynamicsService) -> bool:
    one, two = first.ensemble.state_dict(), second.ensemble.state_dict()
    return one.keys() == two.keys() and all(torch.equal(one[name].cpu(), two[name].cpu()) for name in one)


def test_a_published_artifact_loads_back_equal_from_s3(small_data, store_url, tmp_path, monkeypatch):
    trained = DynamicsService.fit(small_data, QUICK, store=store_url, progress=False)
    slot = locate(store_url).child(trained.key)
    assert {"weights.pt", "meta.json", MANIFEST} <= set(slot.names())
    # A fresh cache: everything comes from the bucket.
    monkeypatch.setenv("MBRL_DYNAMICS_CACHE", str(tmp_path / "other-cache"))
    monkeypatch.setenv("MBRL_DYNAMICS_STORE", store_url)  # the store named by the environment
    loaded = DynamicsService.load(trained.key)
    assert same_weights(trained, loaded) and loaded.meta == trained.meta
    again = DynamicsService.fit(small_data, QUICK, store=store_url, progress=False)
    assert again.was_cached and same_weights(trained, again)
    assert ArtifactStore(store_url).keys() == [trained.key]


def test_an_upload_without_its_manifest_is_not_published_and_is_retrained(small_data, store_url, capsys):
    from workflows.cli import main

    trained = DynamicsService.fit(small_data, QUICK, store=store_url, progress=False)
    store = ArtifactStore(store_url)
    assert store.remote is not None
    store.remote.child(trained.key, MANIFEST).remove()  # as if killed before the last PUT
    assert not store.exists(trained.key)
    assert main(["dynamics", "list", "--store", store_url]) == 0
    assert f"{trained.key}  (not published: its upload was interrupted)" in capsys.readouterr().out
    with pytest.raises(ArtifactError, match="is not published"):
        DynamicsService.load(trained.key, store=store_url)
    retrained = DynamicsService.fit(small_data, QUICK, store=store_url, progress=False)
    assert not retrained.was_cached and store.exists(trained.key)
    assert same_weights(trained, DynamicsService.load(trained.key, store=store_url))


def test_a_changed_file_on_s3_is_refused(small_data, store_url, tmp_path, monkeypatch):
    trained = DynamicsService.fit(small_data, QUICK, store=store_url, progress=False)
    locate(store_url).child(trained.key, "meta.json").put(b"{}")
    monkeypatch.setenv("MBRL_DYNAMICS_CACHE", str(tmp_path / "fresh-cache"))
    with pytest.raises(ArtifactError, match="does not match its recorded hash"):
        DynamicsService.load(trained.key, store=store_url)


def test_a_slot_being_trained_elsewhere_is_refused_naming_the_holder(small_data, store_url):
    from dynamics.artifacts import artifact_key
    from dynamics.config import make_dynamics_config

    key = artifact_key(small_data.fingerprint, make_dynamics_config(QUICK, small_data.info.dataset_id).to_dict())
    held = try_lock_object(locate(store_url).child(f"{LOCK_PREFIX}{key}"))
    assert held is not None
    try:
        with pytest.raises(LockHeld, match=r"is being written by process \d+ on .*delete the lock object s3://"):
            DynamicsService.fit(small_data, QUICK, store=store_url, progress=False)
    finally:
        held.release()
    assert not ArtifactStore(store_url).exists(key)
