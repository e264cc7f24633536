"""Model rollouts on disk: an appendable Zarr group, written by a background thread.

Layout of a store (any Zarr v3 reader can open it)::

    rollouts.zarr/
      observations        (N, obs_dim) float32
      actions             (N, act_dim) float32
      rewards             (N,) float32      raw model reward (no penalty)
      next_observations   (N, obs_dim) float32
      terminals           (N,) bool         the model's termination rule
      rollout_ids         (N,) int32        which start state of its generation the row descends from
      step_indices        (N,) int32        0 .. horizon-1 within its rollout
      generations         (N,) int32        the generation (rollout refresh) the row belongs to
      uncertainty/<name>  (N,) float32      one array per uncertainty feature

Group attributes hold the provenance (``schema_version``, ``created``,
``dynamics_key``, ``horizon``, ``batch_size`` and whatever the caller adds)
and the commit record: ``committed_rows`` and ``generations`` (one entry per
committed generation with its row range, ``policy_step`` and a ``checksum`` of
its rows).

Crash safety: a generation is appended by growing and writing every array,
and only then rewriting the attributes (one atomic object write). Rows past
``committed_rows`` belong to an interrupted append: readers ignore them and
the next writer cuts them off, so a killed process leaves whole generations.
On an object store (``s3://...``, through zarr's ``FsspecStore``) the same
order holds with no rename needed: every chunk and array ``zarr.json`` is one
PUT, and the group's ``zarr.json`` holding the commit record is PUT last, whole
or not at all, so it is the commit marker.

Damage is refused, never read as data: every generation read back (for replay
or on resume) is checked against the checksum recorded at its commit, so a
deleted chunk (which Zarr would read as zeros) or a truncated one stops with one
line. Nothing is ever created over an existing store's data.
"""

from __future__ import annotations

import queue
import threading
import time
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from mbrl_core.batch import TRANSITION_FIELDS
from mbrl_core.errors import ArtifactError

SCHEMA_VERSION = 1
UNCERTAINTY_GROUP = "uncertainty"
# name -> (numpy dtype, True if the array has a feature dimension)
TRANSITION_ARRAYS = dict(
    zip(
        TRANSITION_FIELDS,
        [("float32", True), ("float32", True), ("float32", False), ("float32", True), ("bool", False)],
    )
)
ROW_ARRAYS = {
    **TRANSITION_ARRAYS,
    "rollout_ids": ("int32", False),
    "step_indices": ("int32", False),
    "generations": ("int32", False),
}


@dataclass
class RolloutGeneration:
    """All transitions of one rollout refresh, as tensors (on any device)."""

    number: int
    policy_step: int
    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_observations: torch.Tensor
    terminals: torch.Tensor
    rollout_ids: torch.Tensor
    step_indices: torch.Tensor
    uncertainty: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    def to(self, device: torch.device | str) -> RolloutGeneration:
        tensors = {name: getattr(self, name).to(device) for name in ROW_ARRAYS if name != "generations"}
        return replace(self, **tensors, uncertainty={k: v.to(device) for k, v in self.uncertainty.items()})

    def arrays(self) -> dict[str, np.ndarray]:
        """Host numpy arrays in the store's dtypes (``generations`` filled with this number)."""
        host = {name: getattr(self, name).detach().cpu().numpy() for name in ROW_ARRAYS if name != "generations"}
        host["generations"] = np.full(len(self), self.number)
        typed = {name: np.ascontiguousarray(host[name], dtype=dtype) for name, (dtype, _) in ROW_ARRAYS.items()}
        for name, values in self.uncertainty.items():
            typed[f"{UNCERTAINTY_GROUP}/{name}"] = np.ascontiguousarray(values.detach().cpu().numpy(), dtype="float32")
        return typed


def checksum(arrays: dict[str, np.ndarray], names: list[str]) -> str:
    """CRC-32 of the rows of ``names`` in that order (what a commit records and a read checks)."""
    value = 0
    for name in names:
        value = zlib.crc32(np.ascontiguousarray(arrays[name]).data, value)
    return f"crc32:{value:08x}"


def _refuse_existing_data(url: str | Path, storage_options: dict | None) -> None:
    """Refuse to create a store where data already is: a store whose group metadata is lost must not be wiped.

    Only ``zarr.json`` files may be there (what an interrupted creation leaves: arrays with no rows yet)."""
    import fsspec

    filesystem, path = fsspec.core.url_to_fs(str(url), **(storage_options or {}))
    filesystem.invalidate_cache(path)  # listings cached earlier in this process may be stale
    if not filesystem.exists(path):
        return
    data_files = [name for name in filesystem.find(path) if not str(name).endswith("zarr.json")]
    if data_files:
        raise ArtifactError(
            f"refusing to create a rollout store at {url}: it already holds {len(data_files)} data file(s) but no "
            "readable store metadata (zarr.json missing or damaged); move it away or use another path"
        )


def _open_group(url: str | Path, mode: Literal["r", "r+", "w"], storage_options: dict | None) -> Any:
    import zarr

    return zarr.open_group(str(url), mode=mode, zarr_format=3, storage_options=storage_options or None)


class RolloutStore:
    """An appendable Zarr store of rollout generations (local folder or fsspec URL)."""

    def __init__(self, group, url: str, writable: bool) -> None:
        self.group = group
        self.url = url
        self.writable = writable
        self._check_schema()
        if writable:
            self._drop_uncommitted_rows()

    # ------------------------------------------------------------------ opening

    @classmethod
    def create(
        cls,
        url: str | Path,
        *,
        obs_dim: int,
        act_dim: int,
        uncertainty_names: list[str],
        metadata: dict[str, Any],
        chunk_rows: int = 65_536,
        storage_options: dict | None = None,
    ) -> RolloutStore:
        """A new empty store at ``url``; refused where a store's data already is."""
        _refuse_existing_data(url, storage_options)
        group = _open_group(url, "w", storage_options)
        widths = {"observations": obs_dim, "actions": act_dim, "next_observations": obs_dim}
        for name, (dtype, has_width) in ROW_ARRAYS.items():
            shape, chunks = ((0, widths[name]), (chunk_rows, widths[name])) if has_width else ((0,), (chunk_rows,))
            group.create_array(name, shape=shape, chunks=chunks, dtype=dtype)
        features = group.create_group(UNCERTAINTY_GROUP)
        for name in uncertainty_names:
            features.create_array(name, shape=(0,), chunks=(chunk_rows,), dtype="float32")
        # The schema attributes go last: a store interrupted while being created has none and is refused.
        group.attrs.update(
            {
                **metadata,
                "schema_version": SCHEMA_VERSION,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "obs_dim": obs_dim,
                "act_dim": act_dim,
                "uncertainty_names": list(uncertainty_names),
                "committed_rows": 0,
                "generations": [],
            }
        )
        return cls(group, str(url), writable=True)

    @classmethod
    def open(cls, url: str | Path, mode: str = "r", storage_options: dict | None = None) -> RolloutStore:
        """Open an existing store, read-only (``mode="r"``) or for appending (``mode="a"``)."""
        if mode not in {"r", "a"}:
            raise ValueError(f"mode must be 'r' or 'a', not {mode!r}")
        try:
            group = _open_group(url, "r" if mode == "r" else "r+", storage_options)
        except (FileNotFoundError, KeyError, ValueError) as error:
            raise ArtifactError(f"no rollout store at {url} ({type(error).__name__}: {error})") from error
        except Exception as error:  # zarr raises several kinds for unreadable metadata
            raise ArtifactError(f"rollout store {url} cannot be opened: {type(error).__name__}: {error}") from error
        return cls(group, str(url), writable=(mode == "a"))

    @staticmethod
    def exists(url: str | Path, storage_options: dict | None = None) -> bool:
        try:
            group = _open_group(url, "r", storage_options)
        except Exception:
            return False
        return "schema_version" in group.attrs

    def _check_schema(self) -> None:
        attrs = self.group.attrs
        if "schema_version" not in attrs:
            raise ArtifactError(
                f"{self.url} is not a rollout store (no schema_version attribute; an interrupted creation leaves none)"
            )
        if int(attrs["schema_version"]) > SCHEMA_VERSION:
            raise ArtifactError(
                f"rollout store {self.url} has schema version {attrs['schema_version']}; this version "
                f"reads up to {SCHEMA_VERSION}"
            )
        for name in self._array_names():
            try:
                rows = self.group[name].shape[0]
            except KeyError as error:
                raise ArtifactError(f"rollout store {self.url} is damaged: its array {name} is missing") from error
            if rows < self.committed_rows:
                raise ArtifactError(
                    f"rollout store {self.url} is damaged: array {name} holds {rows} rows, "
                    f"{self.committed_rows} were committed"
                )

    # ------------------------------------------------------------------ what is inside

    @property
    def metadata(self) -> dict[str, Any]:
        return {k: v for k, v in self.group.attrs.asdict().items() if k not in {"generations", "committed_rows"}}

    @property
    def committed_rows(self) -> int:
        return int(self.group.attrs["committed_rows"])

    @property
    def generations(self) -> list[dict[str, Any]]:
        """One record per committed generation: number, start, stop, policy_step, created, checksum."""
        return list(self.group.attrs["generations"])

    @property
    def uncertainty_names(self) -> list[str]:
        return list(self.group.attrs["uncertainty_names"])

    def _array_names(self) -> list[str]:
        return list(ROW_ARRAYS) + [f"{UNCERTAINTY_GROUP}/{name}" for name in self.uncertainty_names]

    def read_rows(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Committed rows ``start:stop`` of every array, keyed by array path."""
        if not 0 <= start <= stop <= self.committed_rows:
            raise ArtifactError(
                f"rows {start}:{stop} are outside the {self.committed_rows} committed rows of {self.url}"
            )
        try:
            return {name: self.group[name][start:stop] for name in self._array_names()}
        except Exception as error:  # a truncated or garbled chunk fails to decode in several ways
            raise ArtifactError(
                f"rollout store {self.url} is damaged: rows {start}:{stop} cannot be read "
                f"({type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]})"
            ) from error

    def read_generation(self, number: int) -> RolloutGeneration:
        """One committed generation as CPU tensors, bit-identical to what was appended."""
        record = next((g for g in self.generations if g["number"] == number), None)
        if record is None:
            raise ArtifactError(f"rollout store {self.url} holds no generation {number}")
        rows = self.read_rows(record["start"], record["stop"])
        recorded = record.get("checksum")  # stores written before checksums were recorded have none
        if recorded is not None and checksum(rows, self._array_names()) != recorded:
            raise ArtifactError(
                f"rollout store {self.url} is damaged: generation {number} (rows {record['start']}:{record['stop']}) "
                "does not match the checksum recorded when it was written (a chunk was deleted or changed)"
            )
        tensors = {name: torch.from_numpy(np.asarray(rows[name])) for name in ROW_ARRAYS if name != "generations"}
        tensors["terminals"] = tensors["terminals"].float()
        tensors["rollout_ids"] = tensors["rollout_ids"].long()
        tensors["step_indices"] = tensors["step_indices"].long()
        prefix = f"{UNCERTAINTY_GROUP}/"
        uncertainty = {
            name[len(prefix) :]: torch.from_numpy(np.asarray(v)) for name, v in rows.items() if name.startswith(prefix)
        }
        return RolloutGeneration(
            number=number, policy_step=int(record["policy_step"]), uncertainty=uncertainty, **tensors
        )

    # ------------------------------------------------------------------ writing

    def append(self, generation: RolloutGeneration) -> None:
        """Write one generation and commit it (the commit is the final attribute write)."""
        if not self.writable:
            raise ArtifactError(f"rollout store {self.url} was opened read-only")
        arrays = generation.arrays()
        missing = set(self._array_names()) - set(arrays)
        if missing:
            raise ArtifactError(
                f"generation {generation.number} lacks {', '.join(sorted(missing))} for store {self.url}"
            )
        start = self.committed_rows
        stop = start + len(generation)
        for name in self._array_names():
            self._write_rows(name, start, arrays[name])
        record = {
            "number": generation.number,
            "start": start,
            "stop": stop,
            "policy_step": generation.policy_step,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "checksum": checksum(arrays, self._array_names()),
        }
        self.group.attrs.update({"generations": self.generations + [record], "committed_rows": stop})

    def _write_rows(self, name: str, start: int, values: np.ndarray) -> None:
        array = self.group[name]
        array.resize((start + len(values),) + tuple(array.shape[1:]))
        array[start:] = values

    def truncate(self, keep_below: int) -> None:
        """Forget generations numbered ``keep_below`` and later (an exact resume drops what followed its checkpoint)."""
        kept = [g for g in self.generations if g["number"] < keep_below]
        if len(kept) == len(self.generations):
            return
        rows = kept[-1]["stop"] if kept else 0
        self.group.attrs.update({"generations": kept, "committed_rows": rows})
        self._drop_uncommitted_rows()

    def _drop_uncommitted_rows(self) -> None:
        committed = self.committed_rows
        for name in self._array_names():
            array = self.group[name]
            if array.shape[0] != committed:
                array.resize((committed,) + tuple(array.shape[1:]))


class BackgroundWriter:
    """Appends generations to a store from a worker thread, so the trainer does not wait on compression and I/O.

    At most ``max_pending`` generations wait in the queue (then ``submit``
    blocks: memory stays bounded). A failure in the worker is raised by the
    next ``submit``/``flush``/``close`` call.
    """

    def __init__(self, store: RolloutStore, max_pending: int = 2) -> None:
        self.store = store
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="rollout-store-writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            generation = self._queue.get()
            try:
                if generation is None:
                    return
                if self._error is None:
                    self.store.append(generation)
            except BaseException as error:  # surfaced on the trainer's thread
                self._error = error
            finally:
                self._queue.task_done()

    def _raise_pending_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise ArtifactError(
                f"writing rollouts to {self.store.url} failed: {type(error).__name__}: {error}"
            ) from error

    def submit(self, generation: RolloutGeneration) -> None:
        self._raise_pending_error()
        if not self._thread.is_alive():
            raise ArtifactError(f"the rollout writer for {self.store.url} is closed")
        self._queue.put(generation)

    def flush(self) -> None:
        """Wait until every submitted generation is committed."""
        self._queue.join()
        self._raise_pending_error()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise_pending_error()
