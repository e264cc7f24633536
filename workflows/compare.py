"""The grid runner: learners x datasets x seeds, one budget, one evaluation protocol.

A compare lives in ``<runs_dir>/compare-<name>/``: ``compare.json`` (the grid),
``runs/<algo>-<dataset>-s<seed>/`` (one run folder each, named without a
timestamp so that running the same command again finds them), and the report.
Finished runs are skipped and interrupted ones resume from their checkpoint.

Model-based runs of a dataset share one dynamics model. It is pretrained once
per (dataset, dynamics config) before those runs start, through the artifact
store, so later compares on the same data reuse it too; model-free runs start
meanwhile. The work runs on an executor (:mod:`workflows.executors`): the
local pool of ``workers`` processes, each limited to ``cores // workers``
torch threads so that together they do not oversubscribe the machine, or Ray
(``executor="ray"``), locally or on a cluster. Either way the folder, its run
folders and the report are the same. A live display
(:mod:`workflows.grid_progress`) follows the whole grid; each run's own output
goes to its folder's ``train.log``.

``runs_dir`` may be a URL (``s3://bucket/grids``, any fsspec filesystem): the
compare folder is then on the store, ``compare.json`` written as one object,
each run trained in its local working copy and uploaded (see
:mod:`workflows.remote_runs`), and the report uploaded next to the runs.
"""

from __future__ import annotations

import contextlib
import json
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dynamics.service import DynamicsService
from mbrl_core.config import build_config, merge, resolve_algo_config
from mbrl_core.data import load_dataset, load_minari
from mbrl_core.device import select_device
from mbrl_core.errors import ConfigError
from mbrl_core.locks import exclusive
from mbrl_core.storage import is_url, locate
from mbrl_core.trainer import TrainerConfig
from policies.registry import get_learner
from workflows.executors import GridExecutor, check_executor_options, current_progress_events, make_grid_executor
from workflows.grid_progress import EpochReporter, GridProgress
from workflows.model_based import OTHER_FIT_WAIT_SECONDS
from workflows.remote_runs import readable_copy, upload_files, without_heavy_parts, working_copy
from workflows.report import ReportData, score_of, write_report
from workflows.runs import (
    changed_settings,
    check_folder_name,
    is_finished,
    read_eval,
    recorded_config,
    train_run,
    trainer_overrides,
)

COMPARE_FILE = "compare.json"
# Two compares adding to one grid at once (each run folder has its own lock) must not lose each other's
# datasets, learners or seeds: compare.json is read and rewritten under this lock, held for a moment.
RECORD_LOCK = ".compare.lock"
RECORD_LOCK_WAIT_SECONDS = 30.0
RUNS_SUBDIR = "runs"
LOG_NAME = "train.log"
# A compare folder: a local path, or the URL of a folder on a store (kept a string: a URL is no Path).
Folder = Path | str


@dataclass(frozen=True)
class CompareSpec:
    """The grid. ``overrides`` (``parse_overrides`` structure) apply to every run, so budgets stay equal."""

    name: str
    datasets: tuple[str, ...]
    algos: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: int
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_folder_name(self.name, "compare name")
        for what in ("datasets", "algos", "seeds"):
            values = getattr(self, what)
            if not values:
                raise ConfigError(f"compare '{self.name}': give at least one of {what}")
            object.__setattr__(self, what, tuple(dict.fromkeys(values)))
        if self.steps <= 0:
            raise ConfigError(f"compare '{self.name}': --steps must be positive (got {self.steps})")

    def record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> CompareSpec:
        return cls(**{key: record[key] for key in ("name", "datasets", "algos", "seeds", "steps", "overrides")})


@dataclass(frozen=True)
class RunTask:
    algo: str
    dataset_id: str
    seed: int
    model_based: bool

    @property
    def name(self) -> str:
        return f"{self.algo}-{self.dataset_id.replace('/', '_')}-s{self.seed}"


@dataclass(frozen=True)
class DynamicsTask:
    """One dynamics model to pretrain: a dataset and the dynamics section its model-based runs resolve to."""

    dataset_id: str
    config: dict[str, Any] | None

    @property
    def name(self) -> str:
        return f"dynamics for {self.dataset_id}"


@dataclass
class CompareOutcome:
    folder: Folder
    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already finished before this call
    failed: dict[str, str] = field(default_factory=dict)
    dynamics: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # dataset id -> {"key", "was_cached", "train_seconds"}


def default_name(datasets: Sequence[str], steps: int) -> str:
    """A name that is the same every time the same grid is asked for, so re-running resumes it."""
    return "+".join(dataset.replace("/", "_") for dataset in datasets) + f"-{steps}steps"


def compare_folder(runs_dir: str | Path, name: str) -> Folder:
    if is_url(str(runs_dir)):
        return f"{str(runs_dir).rstrip('/')}/compare-{name}"
    return Path(runs_dir) / f"compare-{name}"


def run_folder(folder: Folder, name: str) -> Folder:
    """The folder of the run ``name`` in a compare folder (a URL for a compare on a store)."""
    return f"{folder}/{RUNS_SUBDIR}/{name}" if isinstance(folder, str) else folder / RUNS_SUBDIR / name


def local_run_folder(folder: Folder, name: str) -> Path:
    """Where the run's files are written on this machine: its folder, or the working copy of a run on a URL."""
    run = run_folder(folder, name)
    return working_copy(run) if isinstance(run, str) else run


# ---------------------------------------------------------------- planning


def plan_runs(spec: CompareSpec) -> list[RunTask]:
    """Every run of the grid; unknown algorithms and datasets are refused here, before anything trains."""

    model_based = {algo: get_learner(algo).model_based for algo in spec.algos}
    protocols = {}
    for dataset_id in spec.datasets:
        load_minari(dataset_id)
        for algo in spec.algos:
            protocols[f"{algo} on {dataset_id}"] = check_config(algo, dataset_id, spec.overrides)
    if len(set(protocols.values())) > 1:
        listing = "; ".join(
            f"{run}: every {every} steps, {episodes} episodes" for run, (every, episodes) in protocols.items()
        )
        raise ConfigError(
            f"the grid's runs would be evaluated differently ({listing}); fix it with --set "
            "trainer.eval_every=N --set trainer.eval_episodes=M"
        )
    tasks = [
        RunTask(algo, dataset_id, seed, model_based[algo])
        for dataset_id in spec.datasets
        for algo in spec.algos
        for seed in spec.seeds
    ]
    refuse_shared_folders(tasks)
    return tasks


def refuse_shared_folders(tasks: Sequence[RunTask]) -> None:
    """Two dataset ids that differ only by '/' against '_' would train into one run folder: refuse them."""
    owners: dict[str, str] = {}
    for task in tasks:
        owner = owners.setdefault(task.name, task.dataset_id)
        if owner != task.dataset_id:
            raise ConfigError(
                f"datasets {owner} and {task.dataset_id} would share the run folder {task.name} (a '/' becomes '_' "
                "in folder names); compare them in separate grids (--name)"
            )


def check_config(algo: str, dataset_id: str, overrides: dict[str, Any]) -> tuple[int, int]:
    """Refuse a missing config file or a mistyped override once, instead of in every run.

    Returns the run's evaluation protocol (eval_every, eval_episodes), which must be the same across the grid.
    """

    config = resolve_algo_config(algo, dataset_id, overrides)
    build_config(get_learner(algo).config_cls, config.get("learner"), f"{algo}.learner")
    trainer = build_config(TrainerConfig, config.get("trainer"), f"{algo}.trainer")
    return trainer.eval_every, trainer.eval_episodes


def refuse_changed_runs(spec: CompareSpec, folder: Folder, tasks: Sequence[RunTask]) -> None:
    """A grid whose runs were started under other settings (configs/ or --set changed since) or on other data (the
    dataset collected again) would mix them in one report, finished runs skipped and interrupted ones resumed with
    their old config: refuse it, naming each change."""
    stale = []
    fingerprints: dict[str, str] = {}
    for task in tasks:
        recorded = recorded_config(run_folder(folder, task.name))
        if recorded is None:
            continue
        recorded_id = (recorded.get("dataset") or {}).get("id")
        if recorded_id not in (None, task.dataset_id):
            stale.append(f"{task.name}: holds a run on dataset {recorded_id}, not {task.dataset_id}")
            continue
        explicit = {"trainer": trainer_overrides(task.seed, spec.steps)}  # the device only decides where it runs
        changes = changed_settings(
            recorded, resolve_algo_config(task.algo, task.dataset_id, merge(spec.overrides, explicit))
        )
        changes += changed_dataset(recorded, task.dataset_id, fingerprints)
        if changes:
            stale.append(f"{task.name}: {', '.join(changes)}")
    if stale:
        raise ConfigError(
            f"compare '{spec.name}': {len(stale)} run(s) in {folder} were started with other settings or data than "
            f"this grid gives them now ({'; '.join(stale)}). Start a new grid with --name, or move those run folders "
            "away to train them again with the current settings."
        )


def changed_dataset(recorded: dict[str, Any], dataset_id: str, fingerprints: dict[str, str]) -> list[str]:
    """``dataset fingerprint recorded -> current`` when the run was trained on other contents of ``dataset_id``.

    ``fingerprints`` caches the current fingerprint per dataset (computed on the first run that needs it).
    """
    before = (recorded.get("dataset") or {}).get("fingerprint")
    if before is None:  # a hand-made run folder, or one from before fingerprints were recorded
        return []
    if dataset_id not in fingerprints:
        fingerprints[dataset_id] = load_dataset(dataset_id).fingerprint
    now = fingerprints[dataset_id]
    return [] if before == now else [f"dataset fingerprint {before} -> {now} (the dataset was written again)"]


def plan_dynamics(spec: CompareSpec, tasks: Sequence[RunTask]) -> dict[str, list[DynamicsTask]]:
    """Per dataset, the distinct dynamics configs its model-based runs will ask the store for."""
    needed: dict[str, dict[str, DynamicsTask]] = {}
    for task in tasks:
        if task.model_based:
            config = resolve_algo_config(task.algo, task.dataset_id, spec.overrides).get("dynamics")
            needed.setdefault(task.dataset_id, {})[json.dumps(config, sort_keys=True)] = DynamicsTask(
                task.dataset_id, config
            )
    return {dataset_id: list(by_config.values()) for dataset_id, by_config in needed.items()}


def prepare_folder(
    spec: CompareSpec,
    runs_dir: str | Path,
    dynamics_store: str | None,
    execution: dict[str, Any] | None = None,
) -> Folder:
    """Create or reopen the compare folder, refusing to mix budgets or overrides into an earlier grid.

    Adding datasets, algorithms or seeds to an existing compare is fine: the
    recorded grid becomes the union, and only the new runs train. ``execution``
    (the executor and its options) is recorded too, so that the command a
    report prints to add seeds runs the grid the same way.
    """
    folder = compare_folder(runs_dir, spec.name)
    with exclusive(locate(folder).child(RECORD_LOCK), f"the grid record {COMPARE_FILE}", RECORD_LOCK_WAIT_SECONDS):
        write_grid_record(folder, spec, {"dynamics_store": dynamics_store, "out": str(runs_dir)} | (execution or {}))
    return folder


def write_grid_record(folder: Folder, spec: CompareSpec, how: dict[str, Any]) -> None:
    """Record the grid in ``compare.json`` as the union with the grid already recorded there, and ``how``
    (the dynamics store, the runs folder, the executor) as given now."""
    record_file = locate(folder).child(COMPARE_FILE)
    record = spec.record()
    if record_file.exists():
        earlier = json.loads(record_file.read_text())
        for key in ("steps", "overrides"):
            if earlier[key] != record[key]:
                raise ConfigError(
                    f"{folder} was run with {key} = {earlier[key]!r}, not {record[key]!r}: equal "
                    "budgets keep the comparison fair; pick another --name"
                )
        for key in ("datasets", "algos", "seeds"):
            record[key] = list(dict.fromkeys([*earlier[key], *record[key]]))
    record |= how
    # One object (one PUT on a store): a reader sees the old record or the new one.
    record_file.put((json.dumps(record, indent=2, default=float) + "\n").encode())


# ---------------------------------------------------------------- work done by the executor


def train_task(
    task: RunTask,
    steps: int,
    overrides: dict[str, Any],
    folder: str,
    device: str,
    dynamics_store: str | None,
) -> str:
    runs_dir = f"{folder}/{RUNS_SUBDIR}" if is_url(folder) else str(Path(folder) / RUNS_SUBDIR)
    # A run's evaluation lines go to its train.log; the terminal shows the grid's display.
    with run_log(runs_dir, task.name):
        run_dir = train_run(
            task.algo,
            task.dataset_id,
            steps=steps,
            seed=task.seed,
            overrides=overrides,
            runs_dir=runs_dir,
            run_name=task.name,
            resume=True,
            device=device,
            dynamics_store=dynamics_store,
            progress=False,
        )
    return str(run_dir)


@contextlib.contextmanager
def run_log(runs_dir: str, name: str) -> Iterator[None]:
    """Send the run's output to its ``train.log``.

    For a run on a URL the log is kept next to its local working copy, not in
    it (resuming on a machine without the copy replaces it with a download),
    continued from the store's copy, and uploaded into the run folder at the end.
    """
    if not is_url(runs_dir):
        with stdout_to(Path(runs_dir) / name / LOG_NAME):
            yield
        return
    run = locate(runs_dir).child(name)
    stored, local = run.child(LOG_NAME), working_copy(run.url).with_name(f"{name}.{LOG_NAME}")
    if not local.exists() and stored.exists():
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(stored.read_bytes())
    size_before = local.stat().st_size if local.exists() else 0
    try:
        with stdout_to(local):
            yield
    finally:
        # A run refused at once (locked by another writer, say) leaves the store's log alone.
        if local.exists() and local.stat().st_size > size_before:
            stored.upload(local)


@contextlib.contextmanager
def stdout_to(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Line-buffered: `tail -f train.log` follows a run as it trains, and a killed run keeps every line it printed.
    with open(path, "a", buffering=1) as stream, contextlib.redirect_stdout(stream):
        yield


def pretrain_task(task: DynamicsTask, device: str, dynamics_store: str | None) -> dict[str, Any]:
    events = current_progress_events()
    reporters = [EpochReporter(events, task.name)] if events is not None else []
    service = DynamicsService.fit(
        load_dataset(task.dataset_id, device=select_device(device)),
        config=task.config,
        store=dynamics_store,
        progress=False,
        wait_for_other_fit=OTHER_FIT_WAIT_SECONDS,
        callbacks=reporters,
    )
    return {
        "key": service.key,
        "was_cached": bool(service.was_cached),
        "train_seconds": float(service.metrics.get("train_seconds", 0.0)),
    }


# ---------------------------------------------------------------- the grid


def run_compare(
    spec: CompareSpec,
    runs_dir: str | Path = "runs",
    workers: int = 1,
    device: str = "auto",
    dynamics_store: str | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool = True,
    executor: str = "local",
    address: str | None = None,
    cpus_per_run: int | None = None,
) -> CompareOutcome:
    """Train every unfinished run of the grid and return what happened.

    ``log`` receives the message lines (default: printed above the live
    display); ``progress`` turns the live display on. ``executor`` is
    ``local`` (``workers`` processes) or ``ray`` (a local Ray, or the cluster
    at ``address``; each run asks for ``cpus_per_run`` CPUs). The report is
    written by :func:`report_compare`.
    """

    if workers < 1:
        raise ConfigError(f"--workers must be at least 1 (got {workers})")
    check_executor_options(executor, address, cpus_per_run)
    locate(runs_dir)  # a URL whose filesystem is not installed stops here, before any dataset is read
    tasks = plan_runs(spec)
    execution = {"executor": executor, "address": address, "cpus_per_run": cpus_per_run}
    refuse_changed_runs(spec, compare_folder(runs_dir, spec.name), tasks)  # before the folder's record changes
    folder = prepare_folder(spec, runs_dir, dynamics_store, execution)
    outcome = CompareOutcome(folder)
    todo = [task for task in tasks if not is_finished(run_folder(folder, task.name))]
    outcome.skipped = [task.name for task in tasks if task not in todo]
    pool = make_grid_executor(executor, workers, progress, device, address, cpus_per_run)
    try:
        display = GridProgress(
            pool.slots, log=log, events=pool.events, enabled=progress, done_before=len(outcome.skipped)
        )
        if outcome.skipped:
            display.message(f"{len(outcome.skipped)} of {len(tasks)} runs already finished in {folder}: skipped")
        store = absolute(dynamics_store)  # the record keeps it as given
        GridSchedule(pool, spec, outcome, pool.task_device(device), store, display, total=len(tasks)).run(todo)
    finally:
        pool.shutdown()
    return outcome


def absolute(location: str | None) -> str | None:
    """A local path made absolute, so that a worker started in another folder finds it; a URL stays as it is."""
    return location if location is None or "://" in location else str(Path(location).absolute())


def folder_for_workers(folder: Folder) -> str:
    """The compare folder as a worker started in another folder finds it (a URL is the same everywhere)."""
    return folder if isinstance(folder, str) else str(folder.absolute())


@dataclass
class GridSchedule:
    """Hands the grid's work to the executor and records results.

    With the local pool (``executor.capacity`` tasks at a time) dynamics models
    go first, then model-free runs; a dataset's model-based runs jump the queue
    once all its dynamics models exist (they are the longest runs, so starting
    them early keeps the workers evenly busy to the end). An executor that
    queues by itself (Ray) gets everything at once, each model-based run
    naming the dynamics models it needs.
    """

    executor: GridExecutor
    spec: CompareSpec
    outcome: CompareOutcome
    device: str
    dynamics_store: str | None
    display: GridProgress
    total: int
    queue: deque[RunTask | DynamicsTask] = field(default_factory=deque)
    pending: dict[Future, RunTask | DynamicsTask] = field(default_factory=dict)
    waiting: dict[str, list[RunTask]] = field(default_factory=dict)  # dataset id -> model-based runs not yet released
    models_left: dict[str, int] = field(default_factory=dict)  # dataset id -> dynamics models still training
    needs: dict[Future, list[Future]] = field(default_factory=dict)  # a run -> its dynamics models (when submitted)

    def run(self, todo: Sequence[RunTask]) -> None:
        dynamics_plan = plan_dynamics(self.spec, todo)
        self.models_left = {dataset_id: len(models) for dataset_id, models in dynamics_plan.items()}
        self.waiting = {
            dataset_id: [task for task in todo if task.model_based and task.dataset_id == dataset_id]
            for dataset_id in dynamics_plan
        }
        for models in dynamics_plan.values():
            self.queue.extend(models)
            for model in models:
                self.display.add_stage(model.name)
        self.queue.extend(task for task in todo if not task.model_based)
        for task in todo:
            self.display.add_run(
                task.name, task.algo, self.spec.steps, local_run_folder(self.outcome.folder, task.name)
            )
        with self.display:
            if self.executor.capacity is None:
                self.submit_everything()
            self.fill()
            while self.pending:
                done, _ = wait(self.pending, return_when=FIRST_COMPLETED)
                for future in [future for future in self.pending if future in done]:  # in submission order
                    self.complete(future)
                self.fill()

    def fill(self) -> None:
        capacity = self.executor.capacity
        while self.queue and capacity is not None and len(self.pending) < capacity:
            task = self.queue.popleft()
            self.display.started(task.name)
            self.submit(task)

    def submit_everything(self) -> None:
        """Queue the whole grid on the executor; its starts reach the display as events from the tasks."""
        models: dict[str, list[Future]] = {}
        while self.queue:
            task = self.queue.popleft()
            future = self.submit(task)
            if isinstance(task, DynamicsTask):
                models.setdefault(task.dataset_id, []).append(future)
        for dataset_id, runs in self.waiting.items():
            for run in runs:
                self.needs[self.submit(run, needs=models[dataset_id])] = models[dataset_id]
        self.waiting = {}

    def submit(self, task: RunTask | DynamicsTask, needs: Sequence[Future] = ()) -> Future:
        if isinstance(task, DynamicsTask):
            future = self.executor.submit(task.name, pretrain_task, task, self.device, self.dynamics_store)
        else:
            folder = folder_for_workers(self.outcome.folder)
            args = (task, self.spec.steps, self.spec.overrides, folder, self.device, self.dynamics_store)
            future = self.executor.submit(task.name, train_task, *args, needs=needs)
        self.pending[future] = task
        return future

    def complete(self, future: Future) -> None:
        task = self.pending.pop(future, None)
        if task is None:
            return  # a run already failed with its dynamics model
        for model in self.needs.pop(future, []):
            self.complete(model)  # its dynamics model first, whichever of the two the executor reported first
        if isinstance(task, RunTask):
            if task.name not in self.outcome.failed:
                self.finish_run(future, task)
            return
        failure = self.finish_dynamics(future, task)
        self.models_left[task.dataset_id] -= 1
        if failure:
            for run in self.waiting.pop(task.dataset_id, []) + self.drop_submitted_runs(task.dataset_id):
                self.outcome.failed[run.name] = f"its dynamics model failed ({failure})"
                self.display.finished(run.name, failed=True)
        elif self.models_left[task.dataset_id] == 0:
            self.queue.extendleft(reversed(self.waiting.pop(task.dataset_id, [])))

    def drop_submitted_runs(self, dataset_id: str) -> list[RunTask]:
        """The model-based runs of a dataset already handed to an executor that queues by itself."""
        dropped = [
            (future, task)
            for future, task in self.pending.items()
            if isinstance(task, RunTask) and task.model_based and task.dataset_id == dataset_id
        ]
        for future, _ in dropped:
            del self.pending[future]
            self.needs.pop(future, None)
        return [task for _, task in dropped]

    def finish_dynamics(self, future: Future, task: DynamicsTask) -> str | None:
        """Record a pretrained dynamics model; returns the error text if it failed."""
        error = future.exception()
        if error is not None:
            return self.fail(task.name, error)
        info = future.result()
        self.display.finished(task.name)
        self.outcome.dynamics[task.dataset_id] = info
        how = "reused from the store" if info["was_cached"] else f"trained in {info['train_seconds']:.0f} s"
        self.display.message(f"{task.name}: {info['key']} {how}")
        return None

    def finish_run(self, future: Future, task: RunTask) -> None:
        error = future.exception()
        if error is not None:
            self.fail(task.name, error)
            return
        self.outcome.trained.append(task.name)
        evaluation = read_eval(future.result())
        score = score_of(evaluation["final"])
        self.display.finished(task.name, score=score)
        done = len(self.outcome.trained) + len(self.outcome.skipped)
        self.display.message(
            f"[{done}/{self.total}] {task.name}: final score {score:.1f} in {evaluation['train_seconds']:.0f} s"
        )

    def fail(self, name: str, error: BaseException) -> str:
        self.outcome.failed[name] = describe(error)
        self.display.finished(name, failed=True)
        self.display.message(f"FAILED {name}: {self.outcome.failed[name]}")
        return self.outcome.failed[name]


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0]


def write_compare_report(target: Folder) -> tuple[ReportData, str, str]:
    """Write the report of a compare folder (or of any folder of runs), local or on a URL.

    A folder on a URL is read from a download of what the report needs (no
    checkpoints, rollouts or TensorBoard events) and the report is uploaded
    next to its runs. Returns the report's data and where report.html and
    report.md are.
    """
    with readable_copy(target, keep=without_heavy_parts) as folder:
        data, paths = report_compare(folder)
        html, markdown = str(paths.html), str(paths.markdown)
        if is_url(str(target)):
            html, markdown, *_ = upload_files(folder, [paths.html, paths.markdown, *paths.plots], str(target))
    return data, html, markdown


def report_compare(folder: str | Path):
    """Write the report of a local compare folder (or of any folder of runs); returns (ReportData, ReportPaths)."""

    folder = Path(folder)
    record = json.loads((folder / COMPARE_FILE).read_text()) if (folder / COMPARE_FILE).exists() else {}
    return write_report(
        folder,
        title=record.get("name"),
        algo_order=record.get("algos", ()),
        dynamics_store=record.get("dynamics_store"),
        grid=record or None,
    )
