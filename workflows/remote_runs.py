"""Run folders on a URL (``mbrl train --runs-dir s3://bucket/runs``): trained in a local working copy, uploaded.

An object store has no rename and no append, so a run is not written in place:

- It trains in a local **working copy** (``MBRL_RUN_CACHE``, else
  ``~/.cache/mbrl-offline-suite/runs/<hash of the run URL>/<name>``) with every
  local guarantee (atomic files, the folder lock, leftovers cleaned).
- After every checkpoint and at the end, the files that changed are uploaded,
  each as one PUT (whole or absent), ``checkpoints/last.pt`` after every other
  file and ``eval.json`` (the "finished" marker) very last: the remote folder is
  always an earlier checkpoint's state plus, at most, newer logs, and a run is
  finished remotely only once everything it reports on is there.
- A model-based run writes its ``rollouts.zarr`` straight to ``<run URL>/rollouts.zarr``:
  the store commits each generation itself (see :mod:`mbrl_core.rollout_store`),
  and a resume cuts it back to the checkpoint exactly as on a local disk.
- The run is locked by the object ``<run URL>/.lock``, created with a conditional
  PUT and naming its holder (see :mod:`mbrl_core.locks`); a second writer is refused.
- ``--resume`` downloads the run when this machine has no working copy of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from mbrl_core.errors import ArtifactError
from mbrl_core.storage import Location, is_url, locate

CACHE_ENV = "MBRL_RUN_CACHE"
LOCK_NAME = ".lock"
CHECKPOINT, FINISHED_MARKER = "checkpoints/last.pt", "eval.json"
# What a run's rollouts and logs are: left on the store when only its results are read.
HEAVY_PARTS = ("rollouts.zarr/", "tensorboard/", "checkpoints/")


def working_copy(url: str) -> Path:
    """The local folder a run on ``url`` trains in."""
    configured = os.environ.get(CACHE_ENV)
    base = Path(configured).expanduser() if configured else Path.home() / ".cache" / "mbrl-offline-suite" / "runs"
    return base / hashlib.sha256(url.encode()).hexdigest()[:12] / url.rstrip("/").rsplit("/", 1)[-1]


class RemoteRun:
    """A run folder on a URL and its local working copy."""

    def __init__(self, folder: Location) -> None:
        self.folder = folder
        self.work_dir = working_copy(folder.url)
        self.lock = folder.child(LOCK_NAME)
        self._uploaded: dict[str, tuple[int, int]] = {}  # relative path -> (size, mtime_ns) last uploaded

    @property
    def url(self) -> str:
        return self.folder.url

    def entries(self) -> list[str]:
        """What the remote folder holds besides its lock object."""
        return [name for name in self.folder.names() if name != LOCK_NAME]

    def prepare_working_copy(self, resume: bool) -> None:
        """Download the run when resuming it without a working copy; start a new run from an empty one."""
        if not resume:
            shutil.rmtree(self.work_dir, ignore_errors=True)  # what a run deleted from the store left here
        elif not (self.work_dir / "config.yaml").exists() and self.entries():
            # Into a sibling first, renamed when complete: an interrupted download is never taken for the run.
            incoming = self.work_dir.with_name(f".{self.work_dir.name}.download")
            shutil.rmtree(incoming, ignore_errors=True)
            self.folder.download(incoming, keep=lambda relative: not _is_kept_remote(relative))
            shutil.rmtree(self.work_dir, ignore_errors=True)
            os.rename(incoming, self.work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)

    def fetch(self, relative: str) -> None:
        """Copy one file of the remote run into the working copy."""
        destination = self.work_dir / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(self.folder.child(relative).read_bytes())

    def upload(self, finished: bool = False) -> None:
        """Upload what changed in the working copy: the checkpoint after every other file, ``eval.json``
        (only once ``finished``) very last."""
        files = sorted(
            path.relative_to(self.work_dir).as_posix()
            for path in self.work_dir.rglob("*")
            if path.is_file() and not any(part.startswith(".") for part in path.relative_to(self.work_dir).parts)
        )
        ordered = [f for f in files if f not in (CHECKPOINT, FINISHED_MARKER)] + [f for f in files if f == CHECKPOINT]
        if finished and FINISHED_MARKER in files:
            ordered.append(FINISHED_MARKER)
        for relative in ordered:
            stat = (self.work_dir / relative).stat()
            if self._uploaded.get(relative) != (stat.st_size, stat.st_mtime_ns):
                self.folder.child(relative).upload(self.work_dir / relative)
                self._uploaded[relative] = (stat.st_size, stat.st_mtime_ns)


def _is_kept_remote(relative: str) -> bool:
    """Objects a working copy never holds: the lock and the rollout store (written in place on the store)."""
    return relative == LOCK_NAME or relative.startswith("rollouts.zarr/")


@contextlib.contextmanager
def readable_copy(target: str | Path, keep: Callable[[str], bool] = lambda relative: True) -> Iterator[Path]:
    """A local folder to read ``target`` from: the folder itself, or for a URL a temporary download of the
    files ``keep`` accepts (by path relative to it)."""
    if not is_url(target):
        yield Path(target)
        return
    remote = locate(str(target))
    with tempfile.TemporaryDirectory(prefix="mbrl-remote-") as temporary:
        local = Path(temporary) / remote.name
        if not remote.download(local, keep=lambda relative: relative != LOCK_NAME and keep(relative)):
            raise ArtifactError(f"nothing to read at {target}: no such folder on the store")
        yield local


def without_heavy_parts(relative: str) -> bool:
    """Everything of a folder of runs that a report reads (no checkpoints, rollouts or TensorBoard events)."""
    return not any(part in relative for part in HEAVY_PARTS) and not relative.endswith(".pt")


def upload_files(local_root: Path, files: list[Path], target: str) -> list[str]:
    """Upload ``files`` (under ``local_root``) to the same relative places under the URL ``target``."""
    remote = locate(target)
    urls = []
    for path in files:
        destination = remote.child(Path(path).relative_to(local_root).as_posix())
        destination.upload(path)
        urls.append(destination.url)
    return urls
