"""YAML defaults, per-dataset overrides and command-line overrides, resolved into typed configs.

``configs/<algo>.yaml`` holds sections (``learner``, ``trainer``, and for
model-based algorithms ``rollouts``) plus an optional ``datasets`` mapping of
``fnmatch`` patterns on the dataset id to section overrides, applied in file
order. ``configs/trainer.yaml`` holds the shared trainer defaults. Command-line
``--set key=value`` overrides come last; a bare key goes to the ``learner``
section, ``section.key`` to that section.
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import math
import types
import typing
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mbrl_core.errors import ConfigError

T = TypeVar("T")


def configs_dir() -> Path:
    """The installed ``configs`` package folder (works for editable and regular installs)."""
    return Path(str(resources.files("configs")))


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as error:
        raise ConfigError(f"config file not found: {path}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {str(error).splitlines()[0]}") from error
    if not isinstance(content, dict):
        raise ConfigError(f"config file {path} must hold a mapping at top level")
    return content


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``override`` wins."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """``["expectile=0.5", "trainer.steps=1000"]``
    -> ``{"learner": {"expectile": 0.5}, "trainer": {"steps": 1000}}``."""
    result: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override '{pair}' must look like key=value (e.g. expectile=0.7 or trainer.steps=1000)")
        key, raw = pair.split("=", 1)
        section, _, name = key.strip().rpartition(".")
        value = yaml.safe_load(raw) if raw.strip() else None
        result = merge(result, {section or "learner": {name: value}})
    return result


def resolve_algo_config(
    algo: str, dataset_id: str | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Trainer defaults, then the algorithm's file, then matching per-dataset overrides, then ``overrides``."""
    path = configs_dir() / f"{algo}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in configs_dir().glob("*.yaml") if "learner" in read_yaml(p))
        raise ConfigError(f"unknown algorithm '{algo}' (no {path.name} in {configs_dir()}; known: {', '.join(known)})")
    algo_file = read_yaml(path)
    resolved = merge(
        {"trainer": read_yaml(configs_dir() / "trainer.yaml")}, {k: v for k, v in algo_file.items() if k != "datasets"}
    )
    for pattern, section_overrides in (algo_file.get("datasets") or {}).items():
        if dataset_id is not None and fnmatch.fnmatch(dataset_id, pattern):
            resolved = merge(resolved, section_overrides)
    return merge(resolved, overrides or {})


# Field metadata keys read by build_config: the smallest / largest value a number may take.
MINIMUM, MAXIMUM = "minimum", "maximum"


def bounded(default: Any, minimum: float | None = None, maximum: float | None = None) -> Any:
    """A config dataclass field whose value build_config checks against ``minimum``/``maximum``."""
    limits = {name: value for name, value in ((MINIMUM, minimum), (MAXIMUM, maximum)) if value is not None}
    return dataclasses.field(default=default, metadata=limits)


def build_config(cls: type[T], values: dict[str, Any] | None, where: str) -> T:
    """Instantiate a config dataclass, refusing unknown keys (with the list of valid ones) and bad values
    (wrong type, NaN/inf, outside a field's bounds) with the key's name: every number is checked here,
    where the config is built, not where it is first used."""
    if values is not None and not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping of keys to values, not {values!r}")
    values = dict(values or {})
    valid = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in {where} (valid: {', '.join(sorted(valid))})")
    hints = typing.get_type_hints(cls)
    coerced = {name: _checked(valid[name], hints.get(name), value, f"{where}.{name}") for name, value in values.items()}
    try:
        return cls(**coerced)
    except (TypeError, ValueError) as error:  # a config's own __post_init__ checks
        raise ConfigError(f"{where}: {error}") from error


def _checked(field: dataclasses.Field, kind: Any, value: Any, key: str) -> Any:
    try:
        value = _coerce(kind, value)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{key}: cannot use {value!r} ({error})") from error
    minimum, maximum = field.metadata.get(MINIMUM), field.metadata.get(MAXIMUM)
    if minimum is not None and value is not None and value < minimum:
        raise ConfigError(f"{key} must be at least {minimum}, not {value!r}")
    if maximum is not None and value is not None and value > maximum:
        raise ConfigError(f"{key} must be at most {maximum}, not {value!r}")
    return value


def _coerce(kind: Any, value: Any) -> Any:
    """``value`` as the annotated type ``kind`` (int, float, bool, str, optional, tuple/list of those)."""
    if value is None:
        return None
    origin, arguments = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return _coerce(next(a for a in arguments if a is not type(None)), value)
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("expected an integer")
        return int(value)
    if kind is float:
        if isinstance(value, bool):
            raise ValueError("expected a number")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError("expected a finite number")
        return number
    if origin in (tuple, list) and arguments and arguments[0] in (int, float):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"expected a list of {arguments[0].__name__}s such as [256, 256]")
        items = [_coerce(arguments[0], item) for item in value]
        return tuple(items) if origin is tuple else items
    return value


def config_to_dict(config: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    return dict(config)
