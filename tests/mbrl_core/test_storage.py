"""The storage layer: local paths and fsspec URLs (memory://, and s3:// on a real S3 server on loopback)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from mbrl_core.errors import ConfigError
from mbrl_core.locks import LockHeld, exclusive, try_lock_object
from mbrl_core.storage import is_url, locate


@pytest.fixture(params=["local", "memory", "s3"])
def folder(request, tmp_path):
    if request.param == "local":
        return locate(tmp_path / "store")
    if request.param == "memory":
        return locate(f"memory://storage-test-{tmp_path.name}/store")
    return locate(f"{request.getfixturevalue('s3_bucket')}/store")


def test_plain_paths_and_file_urls_are_local_and_others_are_not(tmp_path):
    assert locate(tmp_path).is_local and locate(str(tmp_path)).is_local
    assert locate(f"file://{tmp_path}").local_path == tmp_path
    assert not locate("memory://somewhere/x").is_local
    assert is_url("s3://bucket/x") and not is_url(f"file://{tmp_path}") and not is_url(tmp_path)


def test_an_unknown_protocol_stops_in_one_line():
    with pytest.raises(ConfigError, match="cannot open nosuchprotocol://x"):
        locate("nosuchprotocol://x")


@pytest.mark.parametrize("root", ["s3://", "s3:///", "memory://"])
def test_a_url_without_a_bucket_or_folder_stops_in_one_line(root):
    with pytest.raises(ConfigError, match="name a bucket or folder after the protocol"):
        locate(root)


def test_objects_are_written_read_listed_and_removed(folder, tmp_path):
    assert not folder.exists() and folder.names() == []
    folder.child("a.json").put(b'{"one": 1}')
    folder.child("sub", "b.bin").put(b"\x00\x01")
    folder.child("a.json").put(b'{"one": 2}')  # replaced whole
    assert json.loads(folder.child("a.json").read_text()) == {"one": 2}
    assert folder.names() == ["a.json", "sub"] and folder.files() == ["a.json", "sub/b.bin"]
    copied = folder.download(tmp_path / "copy", keep=lambda relative: relative.startswith("sub/"))
    assert copied == ["sub/b.bin"] and (tmp_path / "copy" / "sub" / "b.bin").read_bytes() == b"\x00\x01"
    folder.child("sub").remove()
    folder.child("sub").remove()  # already gone: nothing happens
    assert folder.files() == ["a.json"]


def test_put_new_creates_only_once(folder):
    marker = folder.child("marker")
    assert marker.put_new(b"first")
    assert not marker.put_new(b"second")
    assert marker.read_bytes() == b"first"


def test_a_lock_object_is_exclusive_and_released(s3_bucket):
    lock = locate(s3_bucket).child("run", ".lock")
    first = try_lock_object(lock)
    assert first is not None and try_lock_object(lock) is None
    with pytest.raises(
        LockHeld, match=rf"is being written by process \d+ on {socket.gethostname()}.*lock object s3://"
    ):
        with exclusive(lock, "run folder x"):
            pass
    first.release()
    with exclusive(lock, "run folder x"):
        assert lock.exists()
    assert not lock.exists()


def test_a_lock_object_left_by_a_killed_process_of_this_host_is_taken_over(s3_bucket):
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = locate(s3_bucket).child(".lock-key")
    lock.put(json.dumps({"pid": int(ended.stdout), "host": socket.gethostname(), "since": "earlier"}).encode())
    taken = try_lock_object(lock)
    assert taken is not None and json.loads(lock.read_text())["pid"] != int(ended.stdout)
    taken.release()


def test_a_lock_object_of_another_host_is_refused_naming_it(s3_bucket):
    lock = locate(s3_bucket).child(".lock-key")
    lock.put(json.dumps({"pid": 1, "host": "other-machine", "since": "2026-01-01 00:00:00 UTC"}).encode())
    with pytest.raises(LockHeld, match="process 1 on other-machine, since 2026-01-01 00:00:00 UTC"):
        with exclusive(lock, "dynamics model k"):
            pass
    assert json.loads(lock.read_text())["host"] == "other-machine"
