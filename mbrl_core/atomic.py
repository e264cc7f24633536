"""Atomic writes: a file is either its old content or its complete new content, never half written."""

from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
import yaml

from mbrl_core.errors import ArtifactError

TEMPORARY_SUFFIX = ".tmp"


def _replace_atomically(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent)
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


def save_bytes(data: bytes, path: Path) -> None:
    _replace_atomically(path, lambda stream: stream.write(data))


def save_text(text: str, path: Path) -> None:
    save_bytes(text.encode(), path)


def save_json(obj: Any, path: Path) -> None:
    save_text(json.dumps(obj, indent=2, sort_keys=False, default=float) + "\n", path)


def save_yaml(obj: Any, path: Path) -> None:
    save_text(yaml.safe_dump(obj, sort_keys=False), path)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete what a killed writer left of an atomic write in ``folder`` (``.<name>.<random>.tmp`` files).

    Call it only while holding the folder's lock: then no live writer owns such a file."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [path for path in folder.glob(f".*{TEMPORARY_SUFFIX}") if path.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def load_torch(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a file written by :func:`save_torch`: tensors and plain data only (``weights_only=True``).

    A file holding anything else (a pickle that could run code on load) is refused in one
    line, as is a missing or damaged one."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if found is None:
            raise ArtifactError(f"checkpoint {path} is damaged and cannot be read (not a torch file)") from error
        raise ArtifactError(
            f"refusing to load {path}: it holds a {found.group(1)} object, not only tensors and plain data, "
            "and loading it could run code; only load files you trust"
        ) from error
    except Exception as error:
        raise ArtifactError(f"checkpoint {path} is damaged and cannot be read ({_first_line(error)})") from error


def _first_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]}"
