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
removed by the next training in the store. A killed training resumes: its fit checkpoint
(``.resume-<key>/fit.ckpt``, written every epoch; for a remote store in its local cache) is picked up
by the next training of the same key and removed once the model is published. A model whose holdout metrics are
not finite is never published. A folder without its manifest is listed as
damaged and refused, never silently retrained over.

The store may also live on any fsspec URL (``MBRL_DYNAMICS_STORE=s3://bucket/dynamics``
or ``--store``). An object store has no rename, so there the **manifest is the
commit marker**: training happens in a local staging folder, then publishing
uploads ``weights.pt`` and ``meta.json`` and only then ``manifest.json`` (each
one PUT, whole or absent). A slot without its manifest is an interrupted
upload: it is not published (``exists`` is False, loading refuses it, the
listing marks it), and the next training of any key removes it once its lock
object is free, then trains it again. Replacing (``--retrain``) deletes the old
manifest first, so readers never pair the new files with the old manifest.
The slot lock is a lock object ``.lock-<key>`` (see :mod:`mbrl_core.locks`).
Loading downloads the files into a local cache (``MBRL_DYNAMICS_CACHE``, else
``~/.cache/mbrl-offline-suite/dynamics-cache/<hash of the store URL>/<key>/``),
checked against the manifest every time, so ``path(key)`` is a local folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from mbrl_core.errors import ArtifactError
from mbrl_core.locks import describe_holder, exclusive, try_lock, try_lock_object
from mbrl_core.storage import Location, is_url, locate

SCHEMA_VERSION = 1
STAGING_PREFIX, RETIRED_PREFIX, LOCK_PREFIX, DOWNLOAD_PREFIX = ".staging-", ".retired-", ".lock-", ".download-"
RESUME_PREFIX, FIT_CHECKPOINT = ".resume-", "fit.ckpt"
# Lightning's launcher sets these in the extra processes of a multi-device training; only rank zero publishes.
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK")
STORE_ENV, CACHE_ENV = "MBRL_DYNAMICS_STORE", "MBRL_DYNAMICS_CACHE"
WEIGHTS, META, MANIFEST = "weights.pt", "meta.json", "manifest.json"


def default_store_root() -> str | Path:
    configured = os.environ.get(STORE_ENV)
    if configured and is_url(configured):
        return configured
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "mbrl-offline-suite" / "dynamics"


def remote_cache_root(url: str) -> Path:
    """The local folder holding downloaded copies of the artifacts of the store at ``url``."""
    configured = os.environ.get(CACHE_ENV)
    default = Path.home() / ".cache" / "mbrl-offline-suite" / "dynamics-cache"
    base = Path(configured).expanduser() if configured else default
    return base / hashlib.sha256(url.encode()).hexdigest()[:12]


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
        chosen = root if root is not None else default_store_root()
        self.remote: Location | None = locate(chosen) if is_url(chosen) else None
        # A local store is a folder; a remote one is worked on through a local cache folder.
        self.root = Path(chosen).expanduser() if self.remote is None else remote_cache_root(self.remote.url)

    @property
    def where(self) -> str:
        """The store as the user named it (its folder or URL), for messages."""
        return self.remote.url if self.remote is not None else str(self.root)

    def describe(self, key: str) -> str:
        """Where the artifact ``key`` is, as the user named the store (a folder or a URL)."""
        return self.remote.child(key).url if self.remote is not None else str(self.path(key))

    def path(self, key: str) -> Path:
        """The artifact's local folder (for a remote store: its verified copy in the cache)."""
        return self.root / key

    def exists(self, key: str) -> bool:
        """Whether the slot is taken: locally by a model or by a damaged folder that :meth:`verify` refuses;
        remotely only by a published model (its manifest is there)."""
        if self.remote is not None:
            return self.remote.child(key, MANIFEST).exists()
        return self.path(key).is_dir()

    def keys(self) -> list[str]:
        """Every slot, damaged ones included (a folder without its manifest is shown, not hidden)."""
        if self.remote is not None:
            return [name for name in self.remote.names() if not name.startswith(".")]
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def resolve(self, key_or_prefix: str) -> str:
        """A full key from a key or a unique prefix of one."""
        matches = [key for key in self.keys() if key.startswith(key_or_prefix)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise ArtifactError(f"no dynamics model '{key_or_prefix}' in {self.where} (see `mbrl dynamics list`)")
        raise ArtifactError(
            f"'{key_or_prefix}' matches {len(matches)} dynamics models in {self.where}: {', '.join(matches)}"
        )

    # ------------------------------------------------------------------ writing

    def lock_path(self, key: str) -> Path:
        return self.root / f"{LOCK_PREFIX}{key}"

    def _slot_lock(self, key: str) -> Path | Location:
        return self.remote.child(f"{LOCK_PREFIX}{key}") if self.remote is not None else self.lock_path(key)

    def wait_for_slot(self, key: str, wait_seconds: float) -> None:
        """Return once no other process trains ``key`` (its slot lock is free); refuse naming the holder after
        ``wait_seconds``."""
        target = self._slot_lock(key)
        print(f"dynamics model {key} is being trained by {describe_holder(target)}: waiting to reuse it", flush=True)
        with exclusive(target, f"dynamics model {key} in {self.where}", wait_seconds):
            pass

    def fit_checkpoint(self, key: str) -> Path:
        """Where the training of ``key`` keeps its per-epoch fit checkpoint."""
        return self.root / f"{RESUME_PREFIX}{key}" / FIT_CHECKPOINT

    def interrupted_fits(self) -> dict[str, int | None]:
        """The keys whose training was interrupted, with the epochs their fit checkpoint has done (None:
        unreadable, so the next training starts again)."""
        if not self.root.is_dir():
            return {}
        fits: dict[str, int | None] = {}
        for checkpoint in sorted(self.root.glob(f"{RESUME_PREFIX}*/{FIT_CHECKPOINT}")):
            try:
                epochs: int | None = epochs_done(torch.load(checkpoint, map_location="cpu", weights_only=True))
            except Exception:  # a damaged checkpoint: listed as such
                epochs = None
            fits[checkpoint.parent.name.removeprefix(RESUME_PREFIX)] = epochs
        return fits

    def remove_fit_checkpoint(self, key: str) -> None:
        shutil.rmtree(self.root / f"{RESUME_PREFIX}{key}", ignore_errors=True)

    @contextlib.contextmanager
    def staging(self, key: str) -> Iterator[Path]:
        """A fresh hidden folder in the store (for a remote store: in its local cache) to build an artifact
        in, with the key's slot locked; removed if anything fails. Another process training the same key is
        refused in one line."""
        self.root.mkdir(parents=True, exist_ok=True)
        if _is_extra_rank():
            slot: contextlib.AbstractContextManager = contextlib.nullcontext()
        else:
            slot = exclusive(self._slot_lock(key), f"dynamics model {key} in {self.where}")
        with slot:
            self.remove_leftovers(own_key=key)
            if self.remote is not None and not _is_extra_rank():
                self._remove_unpublished(own_key=key)
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

    def _remove_unpublished(self, own_key: str) -> None:
        """Delete remote slots without a manifest (interrupted uploads) of ``own_key`` and of keys whose lock
        object is free (no live process is uploading them)."""
        assert self.remote is not None
        for key in self.keys():
            if self.exists(key):
                continue
            if key == own_key:
                self.remote.child(key).remove()
                continue
            lock = try_lock_object(self.remote.child(f"{LOCK_PREFIX}{key}"))
            if lock is not None:
                self.remote.child(key).remove()
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
        if self.remote is not None:
            self._upload(folder, key, replace)
        target = self.path(key)
        if target.exists() and replace:
            retired = self.root / f"{RETIRED_PREFIX}{key}-{uuid.uuid4().hex[:8]}"
            os.rename(target, retired)  # a damaged folder (no manifest) is replaced the same way
            shutil.rmtree(retired, ignore_errors=True)
        try:
            os.rename(folder, target)
        except OSError:
            if not target.is_dir():
                raise
        return target

    def _upload(self, folder: Path, key: str, replace: bool) -> None:
        """Upload the artifact's files with its manifest last (the commit marker, see the module doc)."""
        assert self.remote is not None
        slot = self.remote.child(key)
        if self.exists(key):
            if not replace:
                return  # another process published the same training first: keep its artifact
            slot.child(MANIFEST).remove()  # unpublish first: the new files never pair with the old manifest
        for name in (WEIGHTS, META, MANIFEST):
            slot.child(name).upload(folder / name)
        shutil.rmtree(self.path(key), ignore_errors=True)  # the cached copy of what was replaced

    # ------------------------------------------------------------------ reading

    def verify(self, key: str) -> Path:
        """The artifact folder, after checking every file against the manifest."""
        if self.remote is not None:
            self._download(key)
        folder = self.path(key)
        if not folder.is_dir():
            raise ArtifactError(f"no dynamics model '{key}' in {self.where} (see `mbrl dynamics list`)")
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

    def _download(self, key: str) -> None:
        """Bring the published artifact ``key`` into the local cache (unless the cache holds its manifest)."""
        assert self.remote is not None
        slot = self.remote.child(key)
        try:
            manifest = slot.child(MANIFEST).read_bytes()
        except FileNotFoundError as error:
            state = "is not published (no manifest: its upload was interrupted; training it again replaces it)"
            raise ArtifactError(
                f"dynamics model {key} in {self.where} {state if slot.names() else 'does not exist'}"
            ) from error
        cached = self.path(key)
        if (cached / MANIFEST).is_file() and (cached / MANIFEST).read_bytes() == manifest:
            return  # verify() still checks every cached file against it
        self.root.mkdir(parents=True, exist_ok=True)
        incoming = Path(tempfile.mkdtemp(prefix=DOWNLOAD_PREFIX, dir=self.root))
        try:
            for name in (WEIGHTS, META):
                (incoming / name).write_bytes(slot.child(name).read_bytes())
            (incoming / MANIFEST).write_bytes(manifest)
            shutil.rmtree(cached, ignore_errors=True)
            os.rename(incoming, cached)
        finally:
            shutil.rmtree(incoming, ignore_errors=True)

    def read_meta(self, key: str) -> dict[str, Any]:
        return json.loads((self.verify(key) / META).read_text())

    def read(self, key: str, device: torch.device | str = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
        """(meta, tensors) of a verified artifact."""
        folder = self.verify(key)
        meta = json.loads((folder / META).read_text())
        tensors = torch.load(folder / WEIGHTS, map_location=device, weights_only=True)
        return meta, tensors


def epochs_done(fit_checkpoint: dict[str, Any]) -> int:
    """The epochs a loaded fit checkpoint has finished (Lightning records the index of the last one)."""
    return int(fit_checkpoint["epoch"]) + 1


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
