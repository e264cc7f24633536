"""Where stores live: a local path or any fsspec URL (``s3://bucket/x``, ``gs://``, ``memory://``, ``file://``).

:func:`locate` turns either into a :class:`Location` (an fsspec filesystem and a
path on it) with the few operations the stores need. A plain path or a
``file://`` URL is *local*: the stores keep their local code path for it
(temporary file + fsync + rename, ``flock`` locks), which the kill -9 tests cover.

Object stores have no rename and no append, so the promises are kept another way:

- **One object is atomic.** :meth:`Location.put` is a single PUT (a multipart
  upload for very large objects, completed in one call): the store shows the
  old object or the whole new one, never a part.
- **Several objects commit with a marker written last.** A writer uploads every
  object first and the one that commits them last (a dynamics artifact's
  ``manifest.json``, a rollout store's group ``zarr.json``, a run's checkpoint
  and then ``eval.json``); readers trust only what a marker names.
- **Creation can be exclusive.** :meth:`Location.put_new` is a conditional PUT
  (``If-None-Match: *`` on S3): of two writers creating the same object one
  gets it and the other is told it exists. Locks are built on it.

Endpoints and credentials come from the filesystem's usual configuration (for
S3: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ... or ``~/.aws``), so a URL
works the same in every command.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from mbrl_core.atomic import save_bytes
from mbrl_core.errors import ConfigError


def is_url(target: str | Path) -> bool:
    """Whether ``target`` names a place on a filesystem other than the local one."""
    return isinstance(target, str) and "://" in target and not target.startswith("file://")


@dataclass(frozen=True)
class Location:
    """A file or folder on some filesystem: ``path`` is in the filesystem's own spelling, ``url`` as given."""

    filesystem: fsspec.AbstractFileSystem
    path: str
    url: str

    @property
    def is_local(self) -> bool:
        return isinstance(self.filesystem, LocalFileSystem)

    @property
    def local_path(self) -> Path:
        if not self.is_local:
            raise ValueError(f"{self.url} is not on the local filesystem")
        return Path(self.path)

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def child(self, *names: str) -> Location:
        suffix = "/".join(names)
        return Location(self.filesystem, f"{self.path.rstrip('/')}/{suffix}", f"{self.url.rstrip('/')}/{suffix}")

    def __str__(self) -> str:
        return self.url

    # ------------------------------------------------------------------ reading

    def _fresh(self) -> None:
        """Forget cached listings: another process (or machine) may have changed the store since."""
        self.filesystem.invalidate_cache(self.path)

    def exists(self) -> bool:
        self._fresh()
        return bool(self.filesystem.exists(self.path))

    def read_bytes(self) -> bytes:
        return bytes(self.filesystem.cat_file(self.path))

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def names(self) -> list[str]:
        """The names directly inside this folder (files and folders; empty when it does not exist)."""
        self._fresh()
        if not self.filesystem.exists(self.path):
            return []
        entries = self.filesystem.ls(self.path, detail=False)
        return sorted(str(entry).rstrip("/").rsplit("/", 1)[-1] for entry in entries)

    def files(self) -> list[str]:
        """Every file below this folder, as paths relative to it."""
        self._fresh()
        root = self.path.rstrip("/") + "/"
        found = [str(name) for name in self.filesystem.find(self.path)]
        return sorted(name[len(root) :] for name in found if name.startswith(root))

    # ------------------------------------------------------------------ writing

    def put(self, data: bytes) -> None:
        """Write the whole object at once: a reader sees the old content or all of the new (see the module doc)."""
        if self.is_local:
            save_bytes(data, self.local_path)
            return
        self.filesystem.pipe_file(self.path, data)

    def put_new(self, data: bytes) -> bool:
        """Create the object only if nothing is there (a conditional PUT); False when it already exists."""
        if self.is_local:
            self.local_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                handle = os.open(self.local_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                return False
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
            return True
        try:
            self.filesystem.pipe_file(self.path, data, mode="create")
        except FileExistsError:
            return False
        return True

    def remove(self) -> None:
        """Delete this file or folder (everything below it); nothing happens when it is already gone."""
        self._fresh()
        if self.filesystem.exists(self.path):
            self.filesystem.rm(self.path, recursive=True)

    def upload(self, source: Path) -> None:
        """Copy the local file ``source`` here as one object."""
        self.put(Path(source).read_bytes())

    def download(self, target: Path, keep: Callable[[str], bool] = lambda relative: True) -> list[str]:
        """Copy the files below this folder that ``keep`` accepts (by relative path) into the local ``target``."""
        copied = [relative for relative in self.files() if keep(relative)]
        for relative in copied:
            destination = Path(target) / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(self.child(relative).read_bytes())
        return copied


def locate(target: str | Path) -> Location:
    """The :class:`Location` of a local path or an fsspec URL; an unknown protocol stops in one line."""
    if not is_url(target):
        text = str(target).removeprefix("file://")
        local = Path(text).expanduser().absolute()
        return Location(LocalFileSystem(), str(local), str(target))
    try:
        filesystem, path = fsspec.core.url_to_fs(str(target))
    except (ImportError, ValueError) as error:
        raise ConfigError(f"cannot open {target}: {error}") from error
    if not str(path).strip("/"):
        raise ConfigError(f"cannot open {target}: name a bucket or folder after the protocol, e.g. s3://bucket/runs")
    return Location(filesystem, str(path), str(target).rstrip("/"))
