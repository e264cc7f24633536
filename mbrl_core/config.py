"""YAML defaults, per-dataset settings and command-line overrides, resolved into typed configs.

``configs/<algo>.yaml`` holds sections (``learner``, ``trainer``, and for
model-based algorithms ``rollouts`` and the model's section); ``configs/trainer.yaml``
the shared trainer defaults. Per-dataset settings are chosen by what the
dataset IS, not by how its id is spelled, from the least to the most specific:

1. the file's defaults;
2. ``per_dataset: {<family>: {<kind>: {...values, source: "..."}}}``: the
   environment family comes from the dataset's env spec (``Hopper-v5`` ->
   ``hopper``), the kind (random, medium, medium-replay, expert, medium-expert)
   from the dataset's ``dataset_kind`` metadata, each failing that from the id
   (``hopper/medium-replay-v0``, ``mujoco/hopper/medium-v0``, ``hopper-medium-v2``);
3. ``dataset_ids: {<fnmatch pattern on the id>: {...values, source: "..."}}``,
   applied in file order;
4. command-line ``--set key=value`` overrides: a bare key goes to the
   ``learner`` section, ``section.key`` to that section.

The same resolver serves the flat YAML of the dynamics ensemble (its entries
hold plain keys instead of sections). Every run prints and records which
per-dataset values it got and their source (:class:`PerDatasetChoice`).
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import math
import re
import types
import typing
from collections import Counter
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mbrl_core.data import DatasetInfo, dataset_info, load_minari
from mbrl_core.errors import ConfigError, DatasetError

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
    """``["expectile=0.5", "trainer.eval_every=1000"]``
    -> ``{"learner": {"expectile": 0.5}, "trainer": {"eval_every": 1000}}``."""
    result: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(
                f"override '{pair}' must look like key=value (e.g. expectile=0.7 or trainer.eval_every=1000)"
            )
        key, raw = pair.split("=", 1)
        section, _, name = key.strip().rpartition(".")
        value = yaml.safe_load(raw) if raw.strip() else None
        result = merge(result, {section or "learner": {name: value}})
    return result


# --------------------------------------------------------------------------- what a dataset is

# The D4RL dataset kinds, longest first so that "medium-replay" is found before "medium".
DATASET_KINDS = ("medium-replay", "medium-expert", "random", "medium", "expert")
PER_DATASET_KEY = "per_dataset"
ID_PATTERNS_KEY = "dataset_ids"
SOURCE_KEY = "source"
_VERSION = re.compile(r"-v\d+$")


@dataclasses.dataclass(frozen=True)
class DatasetIdentity:
    """The environment family and the kind of a dataset, and where each was read."""

    dataset_id: str
    family: str | None
    kind: str | None
    family_from: str = "unknown"  # "env spec <id>" or "id"
    kind_from: str = "unknown"  # "metadata" or "id"

    @property
    def label(self) -> str:
        return f"{self.family or '?'}/{self.kind or '?'}"


def environment_family(env_id: str) -> str:
    """``Hopper-v5`` -> ``hopper``, ``ns/HalfCheetah-v5`` -> ``halfcheetah``."""
    return _VERSION.sub("", env_id.rsplit("/", 1)[-1]).lower()


def parse_dataset_id(dataset_id: str) -> tuple[str | None, str | None]:
    """(family, kind) spelled in an id: ``hopper/medium-replay-v0``, ``mujoco/hopper/medium-v0`` or
    ``hopper-medium-replay-v2`` give (hopper, medium-replay) / (hopper, medium) / (hopper, medium-replay)."""
    *folders, last = dataset_id.split("/")
    stem = _VERSION.sub("", last)
    for kind in DATASET_KINDS:
        if stem == kind:
            return (folders[-1].lower() if folders else None), kind
        if stem.endswith(f"-{kind}"):
            return stem[: -len(kind) - 1].lower(), kind
    return (folders[-1].lower() if folders else None), None


def identify_dataset(info: DatasetInfo) -> DatasetIdentity:
    """Family from the env spec and kind from the ``dataset_kind`` metadata, each failing that from the id."""
    return _identify(info.dataset_id, info.env_id, info.dataset_kind)


def as_identity(dataset: str | DatasetIdentity | None) -> DatasetIdentity | None:
    """An identity given as itself, or by dataset id (see :func:`dataset_identity`)."""
    return dataset_identity(dataset) if isinstance(dataset, str) else dataset


def dataset_identity(dataset_id: str) -> DatasetIdentity:
    """The identity of a dataset by id: from its metadata when it is stored locally (nothing is
    downloaded to resolve a config), else from the id alone."""
    try:
        info = dataset_info(load_minari(dataset_id, download=False))
    except DatasetError:
        return _identify(dataset_id, env_id=None, recorded_kind=None)
    return identify_dataset(info)


def _identify(dataset_id: str, env_id: str | None, recorded_kind: str | None) -> DatasetIdentity:
    id_family, id_kind = parse_dataset_id(dataset_id)
    family: str | None
    kind: str | None
    if env_id:
        family, family_from = environment_family(env_id), f"env spec {env_id}"
    else:
        family, family_from = id_family, ("id" if id_family else "unknown")
    if recorded_kind:
        kind, kind_from = recorded_kind, "metadata"
    else:
        kind, kind_from = id_kind, ("id" if id_kind else "unknown")
    return DatasetIdentity(dataset_id, family, kind, family_from, kind_from)


# --------------------------------------------------------------------------- per-dataset settings


@dataclasses.dataclass(frozen=True)
class PerDatasetMatch:
    level: str  # "hopper/medium" or "id pattern '*hopper-medium-v0'"
    values: dict[str, Any]
    source: str


@dataclasses.dataclass
class PerDatasetChoice:
    """Which per-dataset entries of one YAML file a dataset got, and what the file tunes per dataset."""

    file: str
    identity: DatasetIdentity
    matches: list[PerDatasetMatch]
    tuned_keys: list[str]  # dotted keys some entry of the file sets
    defaults: dict[str, Any]  # the file's defaults, before any per-dataset entry

    @property
    def applied(self) -> dict[str, Any]:
        """The per-dataset values that reached the config, as dotted keys (later levels win)."""
        merged: dict[str, Any] = {}
        for match in self.matches:
            merged = merge(merged, match.values)
        return dict(flatten(merged))

    def summary(self, overrides: dict[str, Any] | None = None) -> str:
        """One line: what was applied and from where, or that nothing matched and which fallback is used,
        e.g. ``mopo on hopper/medium-v0 (hopper/medium): penalty 5.0, horizon 5 (OfflineRL-Kit ...)``."""
        overridden = {key: value for key, value in flatten(overrides or {}) if key in self.tuned_keys}
        subject = f"{Path(self.file).stem} on {self.identity.dataset_id} ({self.identity.label})"
        if not self.tuned_keys:
            text = f"{self.file} has no per-dataset values (the same settings on every dataset)"
        elif self.matches:
            values = ", ".join(f"{_short(key)} {value}" for key, value in self.applied.items())
            text = f"{values} ({'; '.join(match.source for match in self.matches)})"
        else:
            defaults = dict(flatten(self.defaults))
            fallback = ", ".join(f"{_short(key)} {defaults.get(key)}" for key in self.tuned_keys)
            text = f"no per-dataset values for {self.identity.label}; fallback: {self.file} defaults ({fallback})"
        if overridden:
            text += "; --set wins: " + ", ".join(f"{_short(key)} {value}" for key, value in overridden.items())
        return f"{subject}: {text}"

    def record(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """What a run's ``config.yaml`` keeps about this choice."""
        identity = self.identity
        return {
            "file": self.file,
            "family": identity.family,
            "family_from": identity.family_from,
            "kind": identity.kind,
            "kind_from": identity.kind_from,
            "applied": self.applied,
            "sources": [f"{match.level}: {match.source}" for match in self.matches],
            "summary": self.summary(overrides),
        }


def _short(dotted_key: str) -> str:
    return dotted_key.rsplit(".", 1)[-1]


def flatten(values: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``{"learner": {"penalty": 5}}`` -> ``("learner.penalty", 5)``."""
    for key, value in values.items():
        if isinstance(value, dict) and value:
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def choose_per_dataset(content: dict[str, Any], identity: DatasetIdentity | None, file: str) -> PerDatasetChoice:
    """The entries of a YAML file's ``per_dataset`` table and ``dataset_ids`` patterns that ``identity`` matches."""
    table = content.get(PER_DATASET_KEY) or {}
    patterns = content.get(ID_PATTERNS_KEY) or {}
    entries = list(_table_entries(table, file)) + [(f"id pattern '{p}'", e) for p, e in _mapping(patterns, file)]
    # Keys set by more entries first (MOPO: penalty and horizon before the optimizer keys of a few entries).
    counts = Counter(key for _, entry in entries for key, _ in flatten(_values(entry)))
    tuned = sorted(counts, key=lambda key: -counts[key])
    matches = []
    if identity is not None:
        families = {str(family).lower(): kinds for family, kinds in _mapping(table, file)}
        entry = (families.get(identity.family or "") or {}).get(identity.kind or "")
        if entry is not None:
            matches.append(PerDatasetMatch(identity.label, _values(entry), _source(entry, identity.label, file)))
        for pattern, entry in _mapping(patterns, file):
            if fnmatch.fnmatch(identity.dataset_id, pattern):
                level = f"id pattern '{pattern}'"
                matches.append(PerDatasetMatch(level, _values(entry), _source(entry, level, file)))
    defaults = {key: value for key, value in content.items() if key not in (PER_DATASET_KEY, ID_PATTERNS_KEY)}
    return PerDatasetChoice(file, identity or DatasetIdentity("", None, None), matches, tuned, defaults)


def apply_per_dataset(base: dict[str, Any], choice: PerDatasetChoice) -> dict[str, Any]:
    """``base`` with the matched entries merged in, least specific first."""
    for match in choice.matches:
        base = merge(base, match.values)
    return base


def _mapping(value: Any, file: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if not isinstance(value, dict):
        raise ConfigError(f"{file}: per-dataset settings must be a mapping, got {value!r}")
    for key, entry in value.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{file}: the per-dataset entry '{key}' must be a mapping, got {entry!r}")
        yield str(key), entry


def _table_entries(table: Any, file: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for family, kinds in _mapping(table, file):
        for kind, entry in _mapping(kinds, file):
            if kind not in DATASET_KINDS:
                raise ConfigError(
                    f"{file}: {PER_DATASET_KEY}.{family}.{kind}: unknown dataset kind '{kind}' "
                    f"(known: {', '.join(sorted(DATASET_KINDS))})"
                )
            yield f"{family}/{kind}", entry


def _values(entry: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in entry.items() if key != SOURCE_KEY}


def _source(entry: dict[str, Any], level: str, file: str) -> str:
    source = entry.get(SOURCE_KEY)
    if not source:
        raise ConfigError(f"{file}: the per-dataset entry {level} must name its '{SOURCE_KEY}'")
    return str(source)


# --------------------------------------------------------------------------- algorithm configs


def algo_config_file(algo: str) -> dict[str, Any]:
    path = configs_dir() / f"{algo}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in configs_dir().glob("*.yaml") if "learner" in read_yaml(p))
        raise ConfigError(f"unknown algorithm '{algo}' (no {path.name} in {configs_dir()}; known: {', '.join(known)})")
    return read_yaml(path)


def resolve_run_config(
    algo: str,
    dataset: str | DatasetIdentity | None = None,
    overrides: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], PerDatasetChoice]:
    """Trainer defaults, the algorithm's file, its per-dataset entries for ``dataset``, then ``overrides``;
    with the per-dataset choice that was made (print its ``summary``, keep its ``record``)."""
    algo_file = algo_config_file(algo)
    choice = choose_per_dataset(algo_file, as_identity(dataset), f"configs/{algo}.yaml")
    resolved = merge({"trainer": read_yaml(configs_dir() / "trainer.yaml")}, choice.defaults)
    return merge(apply_per_dataset(resolved, choice), overrides or {}), choice


def resolve_algo_config(
    algo: str, dataset: str | DatasetIdentity | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The resolved config of ``algo`` on ``dataset`` (see :func:`resolve_run_config`)."""
    return resolve_run_config(algo, dataset, overrides)[0]


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
