"""A content-addressed store of trained dynamics models.

An artifact is a folder ``<root>/<key>/`` holding ``weights.pt`` (tensors only,
loadable with ``torch.load(weights_only=True)``), ``meta.json`` (everything
else: config, spaces, elites, termination rule, metrics, quality report,
disagreement statistics, library versions) and ``manifest.json`` (the SHA-256
of both). The key hashes (dataset fingerprint, dynamics config, schema
version), so the same dataset and config always find the same model.

Writes are atomic: training happens in a hidden staging folder in the store
that is renamed to ``<key>`` only once complete, so a killed training never
leaves a half artifact. While a key trains, its slot is locked (``.lock-<key>``,
released by the OS however the process ends; removed on a normal exit): a second training of the same
key is refused naming the first. Staging folders a killed training left are
removed by the next training in the store. A model whose holdout metrics are
not finite is never published. A folder without its manifest is listed as
damaged and refused, never silently retrained over.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from mbrl_core.errors import ArtifactError
from mbrl_core.locks import exclusive, try_lock

SCHEMA_VERSION = 1
STAGING_PREFIX, RETIRED_PREFIX, LOCK_PREFIX = ".staging-", ".retired-", ".lock-"
# Lightning's launcher sets these in the extra processes of a multi-device training; only rank zero publishes.
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK")
STORE_ENV = "MBRL_DYNAMICS_STORE"
WEIGHTS, META, MANIFEST = "weights.pt", "meta.json", "manifest.json"


def default_store_root() -> Path:
    configured = os.environ.get(STORE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "mbrl-offline-suite" / "dynamics"


def artifact_key(dataset_fingerprint: str, config: dict[str, Any], schema_version: int = SCHEMA_VERSION) -> str:
    content = json.dumps({"dataset": dataset_fingerprint, "config": config, "schema": schema_version}, sort_keys=True)
    return hashlib.sha256(content.encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ArtifactStore:
    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_store_root()

    def path(self, key: str) -> Path:
        return self.root / key

    def exists(self, key: str) -> bool:
        """Whether the slot is taken (by a model, or by a damaged folder that :meth:`verify` refuses)."""
        return self.path(key).is_dir()

    def keys(self) -> list[str]:
        """Every slot, damaged ones included (a folder without its manifest is shown, not hidden)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def resolve(self, key_or_prefix: str) -> str:
        """A full key from a key or a unique prefix of one."""
        matches = [key for key in self.keys() if key.startswith(key_or_prefix)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise ArtifactError(f"no dynamics model '{key_or_prefix}' in {self.root} (see `mbrl dynamics list`)")
        raise ArtifactError(
            f"'{key_or_prefix}' matches {len(matches)} dynamics models in {self.root}: {', '.join(matches)}"
        )

    # ------------------------------------------------------------------ writing

    def lock_path(self, key: str) -> Path:
        return self.root / f"{LOCK_PREFIX}{key}"

    @contextlib.contextmanager
    def staging(self, key: str) -> Iterator[Path]:
        """A fresh hidden folder in the store to build an artifact in, with the key's slot locked;
        removed if anything fails. Another process training the same key is refused in one line."""
        self.root.mkdir(parents=True, exist_ok=True)
        if _is_extra_rank():
            slot: contextlib.AbstractContextManager = contextlib.nullcontext()
        else:
            slot = exclusive(self.lock_path(key), f"dynamics model {key} in {self.root}")
        with slot:
            self.remove_leftovers(own_key=key)
            folder = self.root / f"{STAGING_PREFIX}{key}-{uuid.uuid4().hex[:8]}"
            folder.mkdir()
            try:
                yield folder
            finally:
                shutil.rmtree(folder, ignore_errors=True)

    def remove_leftovers(self, own_key: str) -> None:
        """Delete staging and retired folders that killed processes left: those of ``own_key`` (whose lock
        the caller holds) and of any key no live process is training (its lock is free)."""
        for folder in self.root.iterdir():
            if folder.name.startswith(RETIRED_PREFIX):
                shutil.rmtree(folder, ignore_errors=True)
            elif folder.name.startswith(STAGING_PREFIX):
                key = folder.name[len(STAGING_PREFIX) :].rsplit("-", 1)[0]
                if key == own_key:
                    shutil.rmtree(folder, ignore_errors=True)
                    continue
                lock = try_lock(self.lock_path(key))
                if lock is not None:
                    shutil.rmtree(folder, ignore_errors=True)
                    lock.release()

    def publish(
        self, folder: Path, key: str, tensors: dict[str, Any], meta: dict[str, Any], replace: bool = False
    ) -> Path:
        """Write the files into ``folder`` and rename it to ``<root>/<key>`` in one step.

        If the key already exists it is replaced only when ``replace`` (another
        process may have finished the same training first: its artifact is kept).
        A model whose holdout metrics are NaN/inf is refused, saying why.
        """
        _refuse_broken_metrics(meta)
        torch.save(tensors, folder / WEIGHTS)
        (folder / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
        manifest = {name: file_sha256(folder / name) for name in (WEIGHTS, META)}
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        target = self.path(key)
        if target.exists() and replace:
            retired = self.root / f"{RETIRED_PREFIX}{key}-{uuid.uuid4().hex[:8]}"
            os.rename(target, retired)  # a damaged folder (no manifest) is replaced the same way
            shutil.rmtree(retired, ignore_errors=True)
        try:
            os.rename(folder, target)
        except OSError:
            if not self.exists(key):
                raise
        return target

    # ------------------------------------------------------------------ reading

    def verify(self, key: str) -> Path:
        """The artifact folder, after checking every file against the manifest."""
        folder = self.path(key)
        if not folder.is_dir():
            raise ArtifactError(f"no dynamics model '{key}' in {self.root} (see `mbrl dynamics list`)")
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
        except (OSError, ValueError) as error:
            raise ArtifactError(
                f"dynamics model {key} at {folder} is corrupted: unreadable {MANIFEST} ({error}); "
                "delete it or retrain with --retrain"
            ) from error
        for name in (WEIGHTS, META):
            if not (folder / name).exists() or file_sha256(folder / name) != manifest.get(name):
                raise ArtifactError(
                    f"dynamics model {key} at {folder} is corrupted: {name} does not match its "
                    "recorded hash; delete it or retrain with --retrain"
                )
        return folder

    def read_meta(self, key: str) -> dict[str, Any]:
        return json.loads((self.verify(key) / META).read_text())

    def read(self, key: str, device: torch.device | str = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
        """(meta, tensors) of a verified artifact."""
        folder = self.verify(key)
        meta = json.loads((folder / META).read_text())
        tensors = torch.load(folder / WEIGHTS, map_location=device, weights_only=True)
        return meta, tensors


def _is_extra_rank() -> bool:
    return any(os.environ.get(name, "0") not in ("", "0") for name in RANK_VARIABLES)


def _refuse_broken_metrics(meta: dict[str, Any]) -> None:
    """A model whose holdout error is not a finite number is useless: say why instead of storing it."""
    metrics = meta["metrics"]
    values = {name: metrics.get(name) for name in ("holdout_mse_elites", "holdout_nll_elites")}
    if all(isinstance(v, (int, float)) and math.isfinite(v) for v in values.values()):
        return
    dataset, holdout = meta["dataset"], int(metrics.get("holdout_transitions") or 0)
    shown = ", ".join(f"{name} {value}" for name, value in values.items())
    where = f"dynamics model for '{dataset['id']}' not stored: its holdout metrics are not finite ({shown})"
    if holdout == 0:
        ratio = float(meta["config"]["holdout_ratio"])
        needed = max(1, math.ceil(1.0 / ratio) - 1)
        while int(needed * ratio) < 1:  # the holdout is int(ratio * N) transitions
            needed += 1
        raise ArtifactError(
            f"{where}: {dataset['transitions']} transitions leave no holdout transitions "
            f"(holdout_ratio {ratio}); at least {needed} transitions are needed, in practice thousands"
        )
    raise ArtifactError(
        f"{where} on {holdout} holdout transitions: training diverged; check the dataset for extreme values"
    )
