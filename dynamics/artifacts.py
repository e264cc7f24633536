"""A content-addressed store of trained dynamics models.

An artifact is a folder ``<root>/<key>/`` holding ``weights.pt`` (tensors only,
loadable with ``torch.load(weights_only=True)``), ``meta.json`` (everything
else: config, spaces, elites, termination rule, metrics, quality report,
disagreement statistics, library versions) and ``manifest.json`` (the SHA-256
of both). The key hashes (dataset fingerprint, dynamics config, schema
version), so the same dataset and config always find the same model.

Writes are atomic: training happens in a hidden staging folder in the store
that is renamed to ``<key>`` only once complete, so a killed training never
leaves a half artifact (a leftover ``.staging-*`` folder is ignored).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from mbrl_core.errors import ArtifactError

SCHEMA_VERSION = 1
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
        return (self.path(key) / MANIFEST).exists()

    def keys(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).exists()
        )

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

    @contextlib.contextmanager
    def staging(self, key: str) -> Iterator[Path]:
        """A fresh hidden folder in the store to build an artifact in; removed if anything fails."""
        self.root.mkdir(parents=True, exist_ok=True)
        folder = self.root / f".staging-{key}-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def publish(
        self, folder: Path, key: str, tensors: dict[str, Any], meta: dict[str, Any], replace: bool = False
    ) -> Path:
        """Write the files into ``folder`` and rename it to ``<root>/<key>`` in one step.

        If the key already exists it is replaced only when ``replace`` (another
        process may have finished the same training first: its artifact is kept).
        """
        torch.save(tensors, folder / WEIGHTS)
        (folder / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
        manifest = {name: file_sha256(folder / name) for name in (WEIGHTS, META)}
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        target = self.path(key)
        if target.exists() and replace:
            retired = self.root / f".retired-{key}-{uuid.uuid4().hex[:8]}"
            os.rename(target, retired)
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
