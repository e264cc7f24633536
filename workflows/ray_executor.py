"""The Ray executor of a compare grid (``mbrl compare --executor ray``; the optional extra ``ray``).

Every task of the grid is a Ray task submitted at once with its resource
request (``cpus_per_run`` CPUs, which are also its torch threads, and one GPU
when the device is CUDA); Ray queues them. A model-based run is passed the
ObjectRefs of its dataset's dynamics models, so Ray starts it only once they
are in the artifact store, where it finds them: each model is trained once and
shared, as with the local pool. Without an address a local Ray starts on
loopback with this machine's CPUs and no dashboard; with one (``auto``,
``ray://host:10001``) the grid joins that cluster, whose nodes must see the
compare folder, the datasets and the dynamics store at the same paths (a
compare folder or store on a URL, ``s3://...``, they reach with their own
credentials and endpoint configuration, which are not forwarded).

``ray`` is imported inside the functions that need it: a Ray worker running a
task needs only this module, and the local start must set Ray's loopback
switch before Ray is first imported.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import torch

from mbrl_core.errors import ConfigError
from workflows.executors import set_progress_events
from workflows.grid_progress import STARTED_EVENT

# Where the runs find their data: sent along to a cluster joined by address (a local Ray inherits them).
FORWARDED_VARIABLES = ("MINARI_DATASETS_PATH", "MBRL_DYNAMICS_STORE", "HF_HUB_OFFLINE")
# Read by Ray when imported: "0" makes this machine's Ray node 127.0.0.1, so every Ray process listens on loopback.
LOOPBACK_ONLY_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def run_task(name: str, fn: Callable[..., Any], args: tuple, threads: int, events: Any, *needs: Any) -> Any:
    """One grid task inside a Ray worker; ``needs`` (the dynamics models it waited for) are only a dependency."""
    torch.set_num_threads(threads)
    set_progress_events(events)
    if events is not None:
        events.put((name, STARTED_EVENT, None, None, None))
    return fn(*args)


class RayExecutor:
    """Submits the grid's tasks to Ray: a local Ray it starts, or the cluster at ``address``."""

    capacity: int | None = None

    def __init__(self, address: str | None, cpus_per_run: int, device: str, progress: bool) -> None:
        self.started_ray = connect(address)
        import ray
        from ray.util.queue import Queue

        resources = ray.cluster_resources()
        self.cpus = cpus_per_run
        self.gpus = 1 if device.startswith("cuda") or (device == "auto" and resources.get("GPU", 0) > 0) else 0
        self.slots = max(1, int(resources.get("CPU", 1)) // cpus_per_run)
        self.events = Queue(actor_options={"num_cpus": 0}) if progress else None
        self.remote = ray.remote(run_task)
        self.refs: dict[Future, Any] = {}

    def submit(self, name: str, fn: Callable[..., Any], *args: Any, needs: Sequence[Future] = ()) -> Future:
        ref = self.remote.options(num_cpus=self.cpus, num_gpus=self.gpus, name=name).remote(
            name, fn, args, self.cpus, self.events, *(self.refs[need] for need in needs)
        )
        future: Future = Future()
        ref.future().add_done_callback(lambda done: settle(future, done))
        self.refs[future] = ref
        return future

    def task_device(self, device: str) -> str:
        """A run given a GPU sees only that one (Ray sets CUDA_VISIBLE_DEVICES), so it asks for plain ``cuda``."""
        return "cuda" if self.gpus else device

    def shutdown(self) -> None:
        """Cancel what is still queued or running (an interrupted run resumes from its checkpoint next time)."""
        import ray

        for future, ref in self.refs.items():
            if not future.done():
                ray.cancel(ref)
        if self.events is not None:
            self.events.shutdown()
        if self.started_ray:
            ray.shutdown()


def connect(address: str | None) -> bool:
    """Start a local Ray on loopback, or join the cluster at ``address``, unless this process is connected already.

    Returns whether it connected (and so should disconnect at the end). Workers' output stays in their logs.
    """
    if address is None:
        os.environ.setdefault(LOOPBACK_ONLY_VARIABLE, "0")
    import ray

    if ray.is_initialized():
        return False
    if address is None:
        ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        return True
    forwarded = {name: os.environ[name] for name in FORWARDED_VARIABLES if name in os.environ}
    try:
        ray.init(
            address=address,
            runtime_env={"env_vars": forwarded},
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise ConfigError(f"cannot join the Ray cluster at {address}: {str(error).splitlines()[0]}") from error
    return True


def settle(future: Future, done: Future) -> None:
    """Copy a Ray result onto the grid's future; a task's error arrives as itself, not wrapped in Ray's."""
    error = done.exception()
    if error is None:
        future.set_result(done.result())
    else:
        future.set_exception(getattr(error, "cause", None) or error)
