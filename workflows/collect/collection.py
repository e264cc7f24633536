"""The entry point: start, resume or overwrite a collection; train the behaviour policy, then write the datasets."""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minari.dataset.minari_dataset import parse_dataset_id

from mbrl_core.atomic import save_json
from mbrl_core.data import local_datasets_root
from mbrl_core.errors import ConfigError, DatasetError
from mbrl_core.locks import exclusive
from workflows.collect.behaviour import BehaviourTraining
from workflows.collect.recipe import DatasetRecipe, label_kinds
from workflows.collect.replay import ReplayBuffer
from workflows.collect.settings import RECORD_FILE, STATE_FILE, CollectConfig, collection_dir, dataset_ids

# Two collections of one name at once would interleave their states and datasets: the second is refused.
LOCK_NAME = ".collect.lock"


@dataclass
class CollectResult:
    dataset_ids: dict[str, str]
    directory: Path
    finished: bool
    resumed_from_step: int | None
    record: dict[str, Any]
    replay_buffer: ReplayBuffer | None  # None when the collection had already finished earlier


def collect(
    config: CollectConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    stop_after_steps: int | None = None,
) -> CollectResult:
    """Train the behaviour policy and write the five datasets (see :mod:`workflows.collect`).

    ``resume`` continues a collection of the same name from its last saved
    state; ``overwrite`` deletes an earlier one first. ``stop_after_steps``
    stops training after that many environment steps without saving anything,
    as a kill would (for tests).
    """
    check_name(config.name)
    directory = collection_dir(config.name)
    try:
        # Beside the collection folder (which --overwrite deletes); Minari's listing skips files.
        with exclusive(directory.parent / LOCK_NAME, f"collection '{config.name}'"):
            prepare(config, directory, resume, overwrite)
            return run_collection(config, directory, resume, progress, stop_after_steps)
    finally:
        with contextlib.suppress(OSError):
            directory.parent.rmdir()  # only when empty: a refused collection leaves nothing behind


def run_collection(
    config: CollectConfig, directory: Path, resume: bool, progress: bool, stop_after_steps: int | None
) -> CollectResult:
    if resume and not (directory / STATE_FILE).exists() and (directory / RECORD_FILE).exists():
        return finished_result(config, directory)
    training = BehaviourTraining(config, progress)
    try:
        resumed_from = training.load_state() if (directory / STATE_FILE).exists() else None
        if training.record["status"] == "training":
            if resumed_from is None:
                training.save_state()  # step 0: the collection exists from now on
            if not training.train(stop_after_steps):
                return CollectResult(
                    dataset_ids(config.name), directory, False, resumed_from, training.record, training.buffer
                )
        recipe = DatasetRecipe(training)
        recipe.set_references()
        recipe.write_datasets()
        training.record["status"] = "finished"
        save_json(training.record, directory / RECORD_FILE)
        (directory / STATE_FILE).unlink()  # the replay buffer lives on in medium-replay; the policies stay
        return CollectResult(dataset_ids(config.name), directory, True, resumed_from, training.record, training.buffer)
    finally:
        training.close()


def check_name(name: str) -> None:
    try:
        parse_dataset_id(f"{name}/random-v0")
    except ValueError as error:
        raise ConfigError(
            f"collect: '{name}' cannot name Minari datasets (use letters, digits, '-', '_' and '/', "
            "at least 2 characters)"
        ) from error


def prepare(config: CollectConfig, directory: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to mix with an earlier collection or foreign datasets unless asked to resume or overwrite."""
    root = local_datasets_root()
    existing = [dataset_id for dataset_id in dataset_ids(config.name).values() if (root / dataset_id).exists()]
    if overwrite:
        for dataset_id in existing:
            shutil.rmtree(root / dataset_id)
        shutil.rmtree(directory, ignore_errors=True)
        return
    if (directory / RECORD_FILE).exists() and not resume:
        state = "is complete" if read_record(directory).get("status") == "finished" else "was started"
        raise ConfigError(
            f"collection '{config.name}' {state} in {directory}; pass --resume to continue it or "
            "--overwrite to start over"
        )
    if existing and not directory.exists():
        raise ConfigError(
            f"datasets {', '.join(existing)} already exist and were not made by a collection here; "
            "pass --overwrite to replace them"
        )


def read_record(directory: Path) -> dict[str, Any]:
    try:
        return json.loads((directory / RECORD_FILE).read_text())
    except (OSError, ValueError) as error:
        raise DatasetError(
            f"collection record {directory / RECORD_FILE} cannot be read ({error}); pass --overwrite to start over"
        ) from error


def finished_result(config: CollectConfig, directory: Path) -> CollectResult:
    record = read_record(directory)
    if record.get("status") != "finished":
        raise DatasetError(
            f"collection '{config.name}' in {directory} has no resume state ({STATE_FILE}); pass "
            "--overwrite to start over"
        )
    label_kinds(record)  # datasets collected before their kind was recorded
    return CollectResult(dataset_ids(config.name), directory, True, None, record, None)
