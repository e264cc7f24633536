"""Exclusive locks on folders being written (a run folder, a model store slot).

``fcntl.flock`` on a lock file: the operating system releases it when its
process exits, however it exits (kill -9 included), so a lock is never stale.
The holder writes who it is (pid, host, start time) into the file so that a
refused second writer can say whom it waits for, and deletes the file when it
releases the lock (a killed holder leaves it behind: it means nothing without
the lock held on it, and the next writer takes it over).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from mbrl_core.errors import ConfigError


class LockHeld(ConfigError):
    """Another process holds the lock (the message names it)."""


class Lock:
    """A held lock: :meth:`release` deletes the lock file, then lets the lock go."""

    def __init__(self, path: Path, handle: IO[str]) -> None:
        self.path = path
        self.handle = handle

    def release(self) -> None:
        self.path.unlink(missing_ok=True)  # still holding it: a waiting process re-checks the file it locked
        self.handle.close()


def try_lock(path: Path) -> Lock | None:
    """The lock on ``path``, or None when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        if _same_file(handle, path):
            break
        handle.close()  # the holder deleted this file while releasing: lock the current one instead
    handle.seek(0)
    handle.truncate()
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    handle.write(json.dumps(holder))
    handle.flush()
    return Lock(path, handle)


def _same_file(handle: IO[str], path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False


def describe_holder(path: Path) -> str:
    """Who holds the lock at ``path``, as recorded by it ("another process" while it is still writing that)."""
    try:
        holder = json.loads(path.read_text())
        return f"process {holder['pid']} on {holder['host']}, since {holder['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def refuse_if_locked(path: Path, what: str) -> None:
    """Refuse at once when another process holds the lock at ``path`` (without keeping it)."""
    if not path.exists():
        return
    lock = try_lock(path)
    if lock is None:
        raise LockHeld(f"{what} is being written by {describe_holder(path)}; wait for it to finish or stop it first")
    lock.release()


@contextlib.contextmanager
def exclusive(path: Path, what: str) -> Iterator[None]:
    """Hold the lock at ``path`` for the block, or refuse at once naming the holder of ``what``."""
    lock = try_lock(path)
    if lock is None:
        raise LockHeld(f"{what} is being written by {describe_holder(path)}; wait for it to finish or stop it first")
    try:
        yield
    finally:
        lock.release()
