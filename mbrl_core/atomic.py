"""Atomic writes: a file is either its old content or its complete new content, never half written."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

from mbrl_core.errors import ArtifactError


def _replace_atomically(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_torch(obj: Any, path: Path) -> None:
    _replace_atomically(path, lambda stream: torch.save(obj, stream))


def save_text(text: str, path: Path) -> None:
    _replace_atomically(path, lambda stream: stream.write(text.encode()))


def save_json(obj: Any, path: Path) -> None:
    save_text(json.dumps(obj, indent=2, sort_keys=False, default=float) + "\n", path)


def save_yaml(obj: Any, path: Path) -> None:
    save_text(yaml.safe_dump(obj, sort_keys=False), path)


def load_torch(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint written by :func:`save_torch`, refusing a missing or damaged file in one line."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:
        raise ArtifactError(
            f"checkpoint {path} is damaged and cannot be read ({type(error).__name__}: {error})"
        ) from error
