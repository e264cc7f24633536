"""Where a compare grid's work runs: the local process pool (the default), or Ray.

Both take a function and its arguments and hand back a
:class:`concurrent.futures.Future`, so the grid (:mod:`workflows.compare`)
records results the same way whichever ran them. They differ in who queues:

- :class:`LocalPool` runs ``capacity`` tasks at once; the grid keeps the
  queue and releases a dataset's model-based runs once its dynamics model
  exists.
- the Ray executor (:mod:`workflows.ray_executor`, imported only when asked
  for) takes every task at once and lets Ray queue them by their resource
  request; a model-based run is handed the futures of its dynamics models
  (``needs``) and Ray starts it when they are done.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any, Protocol

import torch

from mbrl_core.errors import ConfigError

EXECUTORS = ("local", "ray")


class GridExecutor(Protocol):
    """What the grid needs from an executor."""

    # Tasks it runs at once when the grid queues for it; None: it queues any number itself and honours ``needs``.
    capacity: int | None
    slots: int  # runs it trains at once, for the display's time estimate
    events: Any  # the queue dynamics epochs (and, when it queues itself, task starts) are reported on

    def submit(self, name: str, fn: Callable[..., Any], *args: Any, needs: Sequence[Future] = ()) -> Future: ...

    def task_device(self, device: str) -> str: ...

    def shutdown(self) -> None: ...


def make_grid_executor(
    kind: str, workers: int, progress: bool, device: str, address: str | None, cpus_per_run: int | None
) -> GridExecutor:
    """The executor ``mbrl compare --executor KIND`` asks for (options checked by :func:`check_executor_options`).

    Ray is imported only here, only for ``ray``: the local pool never loads it.
    """
    if kind == "ray":
        from workflows.ray_executor import RayExecutor

        return RayExecutor(address=address, cpus_per_run=cpus_per_run or 1, device=device, progress=progress)
    return LocalPool(workers, progress)


def check_executor_options(kind: str, address: str | None, cpus_per_run: int | None) -> None:
    """Refuse options that do not fit the executor, and Ray when it is not installed, before anything runs."""
    if kind not in EXECUTORS:
        raise ConfigError(f"unknown executor '{kind}' (use {' or '.join(EXECUTORS)})")
    if kind != "ray":
        for option, value in (("--address", address), ("--cpus-per-run", cpus_per_run)):
            if value is not None:
                raise ConfigError(
                    f"{option} is for --executor ray (the local pool gives each run cores/workers threads)"
                )
        return
    if cpus_per_run is not None and cpus_per_run < 1:
        raise ConfigError(f"--cpus-per-run must be at least 1 (got {cpus_per_run})")
    if importlib.util.find_spec("ray") is None:  # found, not imported: importing it is the executor's business
        raise ConfigError('--executor ray needs Ray: pip install -e ".[ray]"')


# ---------------------------------------------------------------- the local process pool

# The queue dynamics epochs are reported on, in whichever process trains (set per worker process).
progress_events: Any = None


def current_progress_events() -> Any:
    return progress_events


def set_progress_events(events: Any) -> None:
    global progress_events
    progress_events = events


def init_worker(threads: int, events: Any) -> None:
    torch.set_num_threads(threads)
    set_progress_events(events)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    return max(1, usable_cores() // workers)


class InlineExecutor(Executor):
    """Runs each task at submission, in this process: ``workers=1`` keeps tracebacks plain."""

    def submit(self, fn: Callable, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as error:
            future.set_exception(error)
        return future


def make_executor(workers: int, events: Any = None) -> Executor:
    """``events``: the queue the display reads dynamics epochs from (made by :func:`progress_queue`)."""
    if workers <= 1:
        set_progress_events(events)
        return InlineExecutor()
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=init_worker,
        initargs=(threads_per_worker(workers), events),
    )


def progress_queue() -> Any:
    """A queue the spawned workers inherit at start-up (a plain one cannot be pickled into a submitted task)."""
    return multiprocessing.get_context("spawn").Queue()


class LocalPool:
    """``workers`` processes on this machine (this process when 1), each with ``cores // workers`` torch threads."""

    def __init__(self, workers: int, progress: bool) -> None:
        self.capacity: int | None = workers
        self.slots = workers
        self.events = progress_queue() if progress else None
        self.pool = make_executor(workers, self.events)

    def submit(self, name: str, fn: Callable[..., Any], *args: Any, needs: Sequence[Future] = ()) -> Future:
        if needs:
            raise ValueError("the local pool does not wait for other tasks: the grid releases dependent runs")
        return self.pool.submit(fn, *args)

    def task_device(self, device: str) -> str:
        return device

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        set_progress_events(None)
