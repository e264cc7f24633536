"""Runs are folders: resolve a config, build the learner and sampler, train, evaluate, write results.

``runs/<name>/`` holds ``config.yaml`` (the resolved config), ``context.pt``
(what the learner was told about its data), ``metrics.csv``, TensorBoard
events under ``tensorboard/``, ``checkpoints/last.pt`` and, once finished,
``eval.json``. While a process trains it, the folder holds ``.lock`` (an
``fcntl.flock``, see :mod:`mbrl_core.locks`): nothing in a run folder is ever
written by two processes, and nothing finished is ever started over.

``--runs-dir`` may also be a URL (``s3://bucket/runs``, any fsspec filesystem):
the run then trains in a local working copy that is uploaded at every
checkpoint and at the end, with ``eval.json`` last (see :mod:`workflows.remote_runs`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import yaml

from dynamics.config import dynamics_per_dataset
from dynamics.rollouts import RolloutConfig
from mbrl_core.atomic import load_torch, remove_stale_temporaries, save_json, save_text, save_torch, save_yaml
from mbrl_core.config import build_config, merge, resolve_run_config
from mbrl_core.data import DatasetInfo, TransitionData, load_dataset
from mbrl_core.device import select_device
from mbrl_core.errors import ArtifactError, ConfigError
from mbrl_core.evaluation import Evaluator
from mbrl_core.learner import LearnerContext
from mbrl_core.locks import exclusive, refuse_if_locked
from mbrl_core.normalization import Normalizer
from mbrl_core.sampler import RealSampler
from mbrl_core.seeding import seed_everything
from mbrl_core.storage import Location, is_url, locate
from mbrl_core.trainer import OfflineTrainer, TrainerConfig
from policies.registry import LearnerEntry, get_learner
from workflows.model_based import ROLLOUTS_FOLDER, prepare_model_based_run
from workflows.remote_runs import RemoteRun


def default_run_name(algo: str, dataset_id: str, seed: int) -> str:
    return f"{algo}-{dataset_id.replace('/', '_')}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"


FOLDER_NAME_MAX = 200


def check_folder_name(name: str, what: str) -> str:
    """Refuse a run or compare name that is not one plain folder name (``../x`` would write outside ``runs``)."""
    if not name or name in (".", "..") or any(sep in name for sep in ("/", "\\", "\0")):
        raise ConfigError(f"{what} {name!r} must be one folder name: not empty, no '/' or '\\', not '.' or '..'")
    if len(name) > FOLDER_NAME_MAX:
        raise ConfigError(f"{what} is {len(name)} characters long; at most {FOLDER_NAME_MAX}")
    return name


# ---------------------------------------------------------------- dataset facts kept with a run


def info_record(data: TransitionData) -> dict[str, Any]:
    info = data.info
    return {
        "id": info.dataset_id,
        "fingerprint": data.fingerprint,
        "transitions": len(data),
        "env_id": info.env_id,
        "env_spec_json": info.env_spec_json,
        "ref_min_score": info.ref_min_score,
        "ref_max_score": info.ref_max_score,
        "observation_low": np.asarray(info.observation_space.low).tolist(),
        "observation_high": np.asarray(info.observation_space.high).tolist(),
        "action_low": np.asarray(info.action_space.low).tolist(),
        "action_high": np.asarray(info.action_space.high).tolist(),
    }


def info_from_record(record: dict[str, Any]) -> DatasetInfo:
    def box(low, high):
        return gym.spaces.Box(np.array(low, dtype=np.float32), np.array(high, dtype=np.float32), dtype=np.float32)

    return DatasetInfo(
        dataset_id=record["id"],
        observation_space=box(record["observation_low"], record["observation_high"]),
        action_space=box(record["action_low"], record["action_high"]),
        env_id=record.get("env_id"),
        env_spec_json=record.get("env_spec_json"),
        ref_min_score=record.get("ref_min_score"),
        ref_max_score=record.get("ref_max_score"),
    )


def context_state(context: LearnerContext) -> dict[str, Any]:
    state = asdict(context) | {"observation_normalizer": context.observation_normalizer.state_dict()}
    state["device"] = str(context.device)
    return {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in state.items()}


def context_from_state(state: dict[str, Any], device: torch.device) -> LearnerContext:
    values = dict(state)
    values["observation_normalizer"] = Normalizer.from_state_dict(values["observation_normalizer"]).to(device)
    values["action_low"] = values["action_low"].to(device)
    values["action_high"] = values["action_high"].to(device)
    values["device"] = device
    return LearnerContext(**values)


# ---------------------------------------------------------------- training


def train_run(
    algo: str,
    dataset_id: str,
    *,
    steps: int | None = None,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    runs_dir: str | Path = "runs",
    run_name: str | None = None,
    resume: bool = False,
    device: str = "auto",
    dynamics_store: str | None = None,
    rollouts: str | None = None,
    progress: bool = True,
) -> Path:
    """Train ``algo`` on ``dataset_id`` and return the run folder (see the module docstring).

    With ``resume=True`` and an existing ``run_name``, the run continues from its last
    checkpoint with its saved config, as if it had never stopped (a run not started yet
    starts). Without it, an existing run folder is refused: nothing is ever overwritten.
    The run folder is locked while it trains: a second process writing it is refused.
    """
    name = check_folder_name(run_name, "run name") if run_name is not None else default_run_name(algo, dataset_id, seed)
    request = RunRequest(algo, dataset_id, steps, seed, overrides, resume, device, dynamics_store, rollouts, progress)
    if is_url(str(runs_dir)):
        return _train_remote(RemoteRun(locate(str(runs_dir)).child(name)), request)
    return _train_in_folder(runs_root(runs_dir) / name, request)


@dataclass(frozen=True)
class RunRequest:
    """What one :func:`train_run` call asks for, handed down to the function that trains it."""

    algo: str
    dataset_id: str
    steps: int | None
    seed: int
    overrides: dict[str, Any] | None
    resume: bool
    device: str
    dynamics_store: str | None
    rollouts: str | None
    progress: bool
    after_checkpoint: Callable[[], None] | None = None  # a run on a URL uploads its working copy here
    rollouts_store: str | None = None  # where rollouts.zarr goes when not in the run folder (a run on a URL)


def _train_remote(remote: RemoteRun, request: RunRequest) -> Path:
    """Train a run whose folder is on a URL in its local working copy, uploading it (see ``remote_runs``)."""
    with exclusive(remote.lock, f"run folder {remote.url}"):
        check_run_contents(remote.url, remote.entries(), remote.folder, request.algo, request.resume)
        remote.prepare_working_copy(request.resume)
        if request.resume and is_finished(remote.folder):
            remote.fetch("eval.json")  # the working copy may predate the end of the run
            return remote.work_dir
        uploading = replace(
            request, after_checkpoint=remote.upload, rollouts_store=remote.folder.child(ROLLOUTS_FOLDER).url
        )
        run_dir = _train_in_folder(remote.work_dir, uploading)
        remote.upload(finished=True)
        return run_dir


def _train_in_folder(run_dir: Path, request: RunRequest) -> Path:
    algo, resume = request.algo, request.resume
    entry = get_learner(algo)
    refuse_if_locked(run_dir / LOCK_FILE, f"run folder {run_dir}")  # a live run: name its process first
    check_run_folder(run_dir, algo, resume)  # before the lock: a refused call touches nothing
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        with exclusive(run_dir / LOCK_FILE, f"run folder {run_dir}"):
            check_run_folder(run_dir, algo, resume)  # again, now that no other process can change it
            if resume and is_finished(run_dir):
                return run_dir
            for folder in (run_dir, run_dir / "checkpoints"):
                remove_stale_temporaries(folder)  # a killed process's half-written files
            return _train_locked(run_dir, entry, request)
    finally:
        with contextlib.suppress(OSError):  # a run refused before writing anything leaves no empty folder
            if not run_folder_entries(run_dir):
                run_dir.rmdir()


def _train_locked(run_dir: Path, entry: LearnerEntry, request: RunRequest) -> Path:
    algo, dataset_id = request.algo, request.dataset_id
    resuming = request.resume and (run_dir / "config.yaml").exists()
    config = _run_config(
        algo, dataset_id, request.steps, request.seed, request.device, request.overrides, run_dir, resuming
    )
    trainer_config = build_config(TrainerConfig, config["trainer"], f"{algo}.trainer")
    learner_config: Any = build_config(entry.config_cls, config.get("learner"), f"{algo}.learner")
    if entry.model_based:  # bad keys and values stop before any work (the dynamics model may take minutes)
        build_config(RolloutConfig, config.get("rollouts"), f"{algo}.rollouts")
    target = select_device(trainer_config.device)
    seed_everything(trainer_config.seed)
    data = load_dataset(dataset_id, device=target)
    _check_same_dataset(config, data, run_dir, resuming)
    config["dataset"] = info_record(data)
    save_yaml(config, run_dir / "config.yaml")

    context = LearnerContext.from_data(data, trainer_config.steps, target)
    sampler, dynamics_info = _make_sampler(
        algo,
        entry,
        data,
        config,
        trainer_config,
        run_dir,
        target,
        request.rollouts,
        request.dynamics_store,
        context,
        request.rollouts_store,
        progress=request.progress,
    )
    save_torch(context_state(context), run_dir / "context.pt")
    learner = entry.learner_cls(learner_config, context)

    evaluator = Evaluator(data.info, trainer_config.eval_episodes, seed=10_000 + trainer_config.seed, device=target)
    trainer = UploadingTrainer(
        learner,
        sampler,
        trainer_config,
        evaluate=evaluator,
        run_dir=run_dir,
        progress=request.progress,
        after_checkpoint=request.after_checkpoint,
    )
    if resuming:
        trainer.load_checkpoint()  # a run stopped before its first checkpoint starts from step 0
    trainer.loggers = make_loggers(run_dir, resume_step=trainer.state.step if resuming else None)
    try:
        state = trainer.fit()
    finally:
        sampler.close()
        evaluator.close()
    save_json(_eval_record(algo, data, trainer_config, state, entry.model_based, dynamics_info), run_dir / "eval.json")
    return run_dir


class UploadingTrainer(OfflineTrainer):
    """The trainer, calling ``after_checkpoint`` once each checkpoint is saved (a run on a URL uploads then)."""

    def __init__(self, *args: Any, after_checkpoint: Callable[[], None] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.after_checkpoint = after_checkpoint

    def save_checkpoint(self) -> None:
        super().save_checkpoint()
        if self.after_checkpoint is not None:
            self.after_checkpoint()


# ---------------------------------------------------------------- what may be written where

LOCK_FILE = ".lock"


def runs_root(runs_dir: str | Path) -> Path:
    root = Path(runs_dir)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"--runs-dir {root} is a file, not a folder")
    return root


def run_folder_entries(run_dir: Path) -> list[str]:
    """What a run folder holds besides its lock file (empty when it does not exist)."""
    if not run_dir.exists():
        return []
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is a file, not a run folder")
    return sorted(entry.name for entry in run_dir.iterdir() if entry.name != LOCK_FILE)


def check_run_folder(run_dir: Path, algo: str, resume: bool) -> None:
    """Refuse to start over an existing run, and to resume a run with another algorithm."""
    check_run_contents(str(run_dir), run_folder_entries(run_dir), run_dir, algo, resume)


def check_run_contents(where: str, entries: list[str], folder: Path | Location, algo: str, resume: bool) -> None:
    """:func:`check_run_folder` for the run ``folder`` (a path or a place on a store, shown as ``where``)
    holding ``entries``."""
    if not resume:
        if not entries:
            return
        if is_finished(folder):
            raise ConfigError(f"{where} already holds a finished run; nothing is overwritten: pick a fresh --name")
        if "config.yaml" in entries:
            raise ConfigError(
                f"{where} already holds an unfinished run; add --resume to continue it, or pick a fresh --name"
            )
        raise ConfigError(
            f"{where} already exists and holds {', '.join(entries[:3])}; nothing is overwritten: pick a fresh --name"
        )
    if "config.yaml" not in entries:
        return  # nothing was recorded yet: the run starts
    recorded_algo = (recorded_config(folder) or {}).get("algo")
    if not recorded_algo:
        raise ConfigError(f"{config_file(folder)} records no algo: it is not a run's config")
    if recorded_algo != algo:
        raise ConfigError(f"{where} is a {recorded_algo} run; resume it with --algo {recorded_algo}, not {algo}")


def trainer_overrides(seed: int, steps: int | None, device: str | None = None) -> dict[str, Any]:
    """The trainer settings a run's own arguments (seed, steps, device) set over its configs and ``--set``."""
    given = {"seed": seed, "steps": steps, "device": device}
    return {key: value for key, value in given.items() if value is not None}


def _run_config(algo, dataset_id, steps, seed, device, overrides, run_dir: Path, resuming: bool) -> dict[str, Any]:
    if resuming:
        config = read_run_config(run_dir)
        print(f"per-dataset: {config.get('per_dataset', {}).get('summary', 'not recorded (an older run)')} (resumed)")
        return config
    explicit = {"trainer": trainer_overrides(seed, steps, device)}
    resolved, choice = resolve_run_config(algo, dataset_id, merge(overrides or {}, explicit))
    config = {"algo": algo} | resolved
    unknown = sorted(set(config) - {"algo", "learner", "trainer", "rollouts", "dynamics"})
    if unknown:
        raise ConfigError(
            f"unknown config section(s) {', '.join(unknown)} for {algo} (valid: learner, trainer, rollouts, dynamics)"
        )
    # Which per-dataset values this run got, and their source: printed and kept in config.yaml.
    config["per_dataset"] = choice.record(overrides)
    print(f"per-dataset: {config['per_dataset']['summary']}")
    if get_learner(algo).model_based:
        dynamics = dynamics_per_dataset(choice.identity)
        config["per_dataset"]["dynamics"] = dynamics.record((overrides or {}).get("dynamics"))
        if dynamics.tuned_keys:
            print(f"per-dataset: {config['per_dataset']['dynamics']['summary']}")
    return config


def _check_same_dataset(config: dict, data: TransitionData, run_dir: Path, resuming: bool) -> None:
    recorded = (config.get("dataset") or {}).get("fingerprint")
    if resuming and recorded and recorded != data.fingerprint:
        raise ArtifactError(
            f"cannot resume {run_dir}: dataset '{data.info.dataset_id}' changed since the run started "
            f"(fingerprint {recorded} -> {data.fingerprint})"
        )


def _make_sampler(
    algo, entry, data, config, trainer_config, run_dir, device, rollouts, dynamics_store, context, rollouts_store,
    progress=True,
):  # fmt: skip
    if not entry.model_based:
        if rollouts:
            raise ConfigError(f"--rollouts is for model-based algorithms; '{algo}' trains on the real dataset only")
        return RealSampler(data, trainer_config.batch_size, seed=trainer_config.seed), None
    setup = prepare_model_based_run(
        algo,
        data,
        config,
        run_dir,
        device,
        trainer_config.seed,
        rollouts_path=rollouts,
        dynamics_store=dynamics_store,
        rollouts_store=rollouts_store,
        progress=progress,
    )
    context.extras.update(setup.context_extras)
    return setup.sampler, setup.dynamics_info


# The rows of metrics.csv before a resume, kept until the resumed run's CSV logger has written them again.
METRICS_KEPT_FOR_RESUME = ".metrics.csv.before-resume"


def make_loggers(run_dir: Path, resume_step: int | None = None) -> list:
    """Lightning's CSV and TensorBoard loggers writing into the run folder.

    Lightning's CSV logger deletes an existing metrics.csv when it starts, so on
    resume the earlier rows up to the checkpoint's step are handed back to it (rows
    logged after the checkpoint are logged again by the resumed run). They are read
    from a copy kept until they are written again, so a kill in between loses none.
    """
    from lightning.fabric.loggers import CSVLogger, TensorBoardLogger

    metrics_file, kept = run_dir / "metrics.csv", run_dir / METRICS_KEPT_FOR_RESUME
    if resume_step is not None and metrics_file.exists() and not kept.exists():
        save_text(metrics_file.read_text(), kept)
    earlier = _read_metric_rows(kept if kept.exists() else metrics_file) if resume_step is not None else []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        csv_logger = CSVLogger(root_dir=str(run_dir), name="", version="", flush_logs_every_n_steps=1)
        _ = csv_logger.experiment  # created now, inside the warning filter (it warns about the non-empty run folder)
        for row in earlier:
            step = int(float(row.pop("step")))
            if resume_step is not None and step > resume_step:
                continue
            csv_logger.log_metrics({k: float(v) for k, v in row.items() if v not in ("", None)}, step=step)
        csv_logger.save()
    kept.unlink(missing_ok=True)
    return [
        csv_logger,
        TensorBoardLogger(root_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False),
    ]


def _read_metric_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def _eval_record(algo, data, trainer_config, state, model_based: bool, dynamics_info) -> dict[str, Any]:
    history = state.history
    scored = [h for h in history if h.get("normalized_score") is not None] or history
    key = "normalized_score" if any(h.get("normalized_score") is not None for h in history) else "return_mean"
    updates_seconds = max(state.train_seconds - state.eval_seconds, 1e-9)
    return {
        "algo": algo,
        "dataset_id": data.info.dataset_id,
        "seed": trainer_config.seed,
        "steps": state.step,
        "model_based": model_based,
        "final": history[-1] if history else None,
        "best": max(scored, key=lambda h: h[key]) if scored else None,
        "history": history,
        "train_seconds": state.train_seconds,
        "updates_per_second": state.step / updates_seconds,
        "dynamics": dynamics_info,
        "finished": True,
    }


# ---------------------------------------------------------------- reading runs back


def read_eval(run_dir: str | Path | Location) -> dict[str, Any]:
    """A run's eval.json (the folder may be a path, a URL or a place on a store)."""
    folder = run_dir if isinstance(run_dir, Location) else locate(run_dir)
    path = folder.child("eval.json")
    if not path.exists():
        raise ArtifactError(
            f"{run_dir} has no eval.json: the run has not finished (resume it with `mbrl train ... --resume`)"
        )
    try:
        record = json.loads(path.read_text())
    except ValueError as error:
        raise ArtifactError(
            f"{path} is damaged ({error}); resume the run with `mbrl train ... --resume` to write it again"
        ) from error
    if not isinstance(record, dict) or not isinstance(record.get("final"), dict):
        raise ArtifactError(f"{path} records no final evaluation; resume the run with `mbrl train ... --resume`")
    return record


def is_finished(run_dir: str | Path | Location) -> bool:
    """Whether the run wrote a complete eval.json (a damaged one counts as not finished: resuming rewrites it)."""
    try:
        return bool(read_eval(run_dir).get("finished", False))
    except ArtifactError:
        return False


# The config sections that decide what a run learns, and the trainer keys that only decide how it is kept or shown.
RESULT_SECTIONS = ("learner", "trainer", "rollouts", "dynamics")
BOOKKEEPING_TRAINER_KEYS = frozenset({"device", "checkpoint_every", "checkpoint_minutes", "log_every"})


def config_file(run_dir: str | Path | Location) -> Location:
    """Where a run folder (path, URL or place on a store) keeps the config it recorded when it started."""
    return (run_dir if isinstance(run_dir, Location) else locate(run_dir)).child("config.yaml")


def recorded_config(run_dir: str | Path | Location) -> dict[str, Any] | None:
    """The config a run folder recorded when it started; None before that, {} if the file holds no mapping."""
    path = config_file(run_dir)
    if not path.exists():
        return None
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from error
    return config if isinstance(config, dict) else {}


def changed_settings(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``section.key recorded -> current`` for each setting that decides what a run learns and differs (a section
    the run did not record at all, as in a hand-made run folder, is not compared)."""
    changes = []
    for section in (section for section in RESULT_SECTIONS if section in recorded):
        old, new = recorded[section] or {}, current.get(section) or {}
        for key in sorted(set(old) | set(new)):
            if section == "trainer" and key in BOOKKEEPING_TRAINER_KEYS:
                continue
            if old.get(key) != new.get(key):
                before = old[key] if key in old else "(not recorded)"
                after = new[key] if key in new else "(no longer set)"
                changes.append(f"{section}.{key} {before} -> {after}")
    return changes


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """A run's recorded config, refused in one line when the folder holds none or not a complete one."""
    config = recorded_config(run_dir)
    if config is None:
        raise ArtifactError(f"{run_dir} is not a run folder (no config.yaml)")
    for key in ("algo", "dataset"):
        if key not in config:
            raise ConfigError(f"{config_file(run_dir)} records no {key}: it is not a complete run config")
    return config


def load_policy(run_dir: str | Path, device: str | torch.device = "cpu"):
    """The trained learner of a run (from its last checkpoint), ready for ``act(obs)``."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    device = select_device(str(device))
    entry = get_learner(config["algo"])
    context = context_from_state(load_torch(run_dir / "context.pt"), device)
    learner = entry.learner_cls(
        build_config(entry.config_cls, config.get("learner"), f"{config['algo']}.learner"), context
    )
    learner.load_state_dict(load_torch(run_dir / "checkpoints" / "last.pt", map_location=device)["learner"])
    return learner


def run_dataset_info(run_dir: str | Path) -> DatasetInfo:
    """The dataset facts recorded in a run (enough to evaluate without the dataset)."""
    try:
        return info_from_record(read_run_config(run_dir)["dataset"])
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(f"{Path(run_dir) / 'config.yaml'} has an incomplete dataset record ({error})") from error
