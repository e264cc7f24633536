"""Exclusive locks on folders being written (a run folder, a model store slot).

``fcntl.flock`` on a lock file: the operating system releases it when its
process exits, however it exits (kill -9 included), so a lock is never stale.
The holder writes who it is (pid, host, start time) into the file so that a
refused second writer can say whom it waits for, and deletes the file when it
releases the lock (a killed holder leaves it behind: it means nothing without
the lock held on it, and the next writer takes it over).

On an object store (a :class:`~mbrl_core.storage.Location` that is not local)
there is no ``flock``: the lock is an object created with a conditional PUT
(``If-None-Match: *``), so of two writers exactly one creates it; it names its
holder and is deleted on release. Nothing releases it when its holder is killed:
a lock left by a process of this host that no longer runs is taken over; one
from another host is refused naming it, and the message says which object to
delete once that process is known to be gone.
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
from mbrl_core.storage import Location


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
    handle.write(json.dumps(_this_holder()))
    handle.flush()
    return Lock(path, handle)


def _this_holder() -> dict[str, object]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


class ObjectLock:
    """A held lock object on an object store: :meth:`release` deletes it."""

    def __init__(self, location: Location) -> None:
        self.location = location

    def release(self) -> None:
        self.location.remove()


def try_lock_object(location: Location) -> ObjectLock | None:
    """The lock object at ``location`` (created by a conditional PUT), or None when a live holder has it."""
    record = json.dumps(_this_holder()).encode()
    if location.put_new(record):
        return ObjectLock(location)
    if _left_by_ended_process(location):
        location.remove()
        if location.put_new(record):
            return ObjectLock(location)
    return None


def _left_by_ended_process(location: Location) -> bool:
    """Whether the lock object names a process of this host that no longer runs (it was killed)."""
    holder = _read_holder(location)
    if holder is None or holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, TypeError, ValueError):
        return False
    return False


def _read_holder(target: Path | Location) -> dict | None:
    try:
        text = target.read_text()
        holder = json.loads(text)
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _same_file(handle: IO[str], path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False


def describe_holder(target: Path | Location) -> str:
    """Who holds the lock at ``target``, as recorded by it ("another process" while it is still writing that)."""
    holder = _read_holder(target) or {}
    try:
        return f"process {holder['pid']} on {holder['host']}, since {holder['since']}"
    except KeyError:
        return "another process"


def _take(target: Path | Location) -> Lock | ObjectLock | None:
    if isinstance(target, Location):
        return try_lock(target.local_path) if target.is_local else try_lock_object(target)
    return try_lock(target)


def _refusal(target: Path | Location, what: str) -> LockHeld:
    message = f"{what} is being written by {describe_holder(target)}; wait for it to finish or stop it first"
    if isinstance(target, Location) and not target.is_local:
        message += f" (if that process is gone, delete the lock object {target.url})"
    return LockHeld(message)


def refuse_if_locked(target: Path | Location, what: str) -> None:
    """Refuse at once when another process holds the lock at ``target`` (without keeping it)."""
    if not target.exists():
        return
    lock = _take(target)
    if lock is None:
        raise _refusal(target, what)
    lock.release()


@contextlib.contextmanager
def exclusive(target: Path | Location, what: str, wait_seconds: float = 0.0) -> Iterator[None]:
    """Hold the lock at ``target`` (a local path, or a lock object on a store) for the block, or refuse naming
    the holder of ``what``: at once, or after ``wait_seconds`` (for locks that are held only for a moment, such
    as a shared record's read-modify-write)."""
    deadline, pause = time.monotonic() + wait_seconds, 0.05
    while (lock := _take(target)) is None:
        if time.monotonic() >= deadline:
            raise _refusal(target, what)
        time.sleep(min(pause, max(deadline - time.monotonic(), 0.0)))
        pause = min(2 * pause, 5.0)  # a long wait on an object store is a few requests a minute, not 20 a second
    try:
        yield
    finally:
        lock.release()
