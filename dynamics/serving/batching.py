"""The batching worker: one owner of the model, answering concurrent requests with shared forward passes.

Requests are queued from the server's event loop; the worker gathers what is queued and answers all
predict requests of a gathering with ONE forward pass, and all step requests with another, split
back per request. The forward pass runs on a single model thread, so the event loop keeps reading
(and validating) the next requests meanwhile: they form the next batch.

Gathering first lets the event loop read the requests that have already reached the sockets, then
stops at ``batch_rows`` rows, or once no request is still arriving (a body being read), or after
``max_wait_ms``: a lone client never waits for company.

A step is reproducible from its own seed: :meth:`DynamicsService.step_segments` draws each request's
elites and noise from that request's generator, whichever requests share its forward pass.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch

from dynamics.service import DynamicsService, ModelStep, Prediction

Kind = Literal["predict", "step"]
# turns of the event loop from bytes waiting in a socket to a queued request: read and parse the
# headers, then run the handler (a small body arrives with its headers)
LOOP_TURNS_TO_READ = 3


@dataclass
class ModelRequest:
    """A validated predict or step request."""

    observations: torch.Tensor  # [B, obs_dim] float32
    actions: torch.Tensor  # [B, act_dim] float32
    per_member: bool = False
    seed: int = 0  # step requests only

    @property
    def rows(self) -> int:
        return self.observations.shape[0]


@dataclass
class Job:
    kind: Kind
    request: ModelRequest
    answer: asyncio.Future = field(repr=False)


class BatchingWorker:
    """Lives on one event loop: :meth:`run` is its task; the request handlers await :meth:`predict` and
    :meth:`step`."""

    def __init__(self, service: DynamicsService, batch_rows: int, max_wait_ms: float) -> None:
        self.service = service
        self.batch_rows = batch_rows
        self.max_wait = max_wait_ms / 1000.0
        self.requests_answered = 0
        self.forward_passes = 0
        self._arriving = 0
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        # one thread owns the model: forward passes never overlap, and never block the event loop
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="dynamics-model")

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Marks a model request being read and validated: the gathering batch may wait for it."""
        self._arriving += 1
        try:
            yield
        finally:
            self._arriving -= 1

    async def predict(self, request: ModelRequest) -> Prediction:
        return cast(Prediction, await self._queued("predict", request))

    async def step(self, request: ModelRequest) -> ModelStep:
        return cast(ModelStep, await self._queued("step", request))

    async def _queued(self, kind: Kind, request: ModelRequest) -> Prediction | ModelStep:
        job = Job(kind, request, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(job)
        return await job.answer

    async def run(self) -> None:
        """Answers batches until cancelled (the server stops it once every request has been answered)."""
        try:
            while True:
                jobs = await self._gather(await self._queue.get())
                await self._answer(jobs)
                self.requests_answered += len(jobs)
        finally:
            self._model_thread.shutdown(wait=True)

    async def _gather(self, first: Job) -> list[Job]:
        loop = asyncio.get_running_loop()
        jobs, rows = [first], first.request.rows
        deadline = loop.time() + self.max_wait
        for _ in range(LOOP_TURNS_TO_READ):  # requests already in the sockets' buffers join this batch
            await asyncio.sleep(0)
        while rows < self.batch_rows:
            if self._queue.empty():
                remaining = deadline - loop.time()
                if self._arriving == 0 or remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            else:
                job = self._queue.get_nowait()
            jobs.append(job)
            rows += job.request.rows
        return jobs

    async def _answer(self, jobs: list[Job]) -> None:
        loop = asyncio.get_running_loop()
        computations: list[tuple[list[Job], Callable[[list[ModelRequest]], list[Any]]]] = [
            ([job for job in jobs if job.kind == "predict"], self._predict_batch),
            ([job for job in jobs if job.kind == "step"], self._step_batch),
        ]
        for group, compute in computations:
            if not group:
                continue
            requests = [job.request for job in group]
            try:
                results = await loop.run_in_executor(self._model_thread, compute, requests)
            except Exception as error:  # an unexpected model failure answers 500; the worker keeps serving
                for job in group:
                    _settle(job.answer, error=error)
                continue
            for job, result in zip(group, results):
                _settle(job.answer, result=result)

    def _predict_batch(self, requests: list[ModelRequest]) -> list[Prediction]:
        observations, actions = _join(requests)
        prediction = self.service.predict(
            observations, actions, per_member=any(request.per_member for request in requests)
        )
        self.forward_passes += 1
        results, start = [], 0
        for request in requests:
            stop = start + request.rows
            results.append(_slice_prediction(prediction, start, stop, request.per_member))
            start = stop
        return results

    def _step_batch(self, requests: list[ModelRequest]) -> list[ModelStep]:
        observations, actions = _join(requests)
        device = self.service.device
        segments = [(request.rows, torch.Generator(device=device).manual_seed(request.seed)) for request in requests]
        steps = self.service.step_segments(observations, actions, segments)
        self.forward_passes += 1
        return steps


def _settle(answer: asyncio.Future, result: Any = None, error: BaseException | None = None) -> None:
    if answer.done():  # the client went away and its handler was cancelled
        return
    if error is not None:
        answer.set_exception(error)
    else:
        answer.set_result(result)


def _join(requests: list[ModelRequest]) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of several requests stacked into one model input."""
    return torch.cat([r.observations for r in requests]), torch.cat([r.actions for r in requests])


def _slice_prediction(prediction: Prediction, start: int, stop: int, per_member: bool) -> Prediction:
    """Rows ``start:stop`` of a batched prediction (the member outputs only when asked for)."""
    rows = slice(start, stop)
    means, stds = prediction.member_means, prediction.member_stds
    return Prediction(
        prediction.next_observations[rows],
        prediction.rewards[rows],
        prediction.terminals[rows],
        {name: values[rows] for name, values in prediction.uncertainty.items()},
        means[:, rows] if per_member and means is not None else None,
        stds[:, rows] if per_member and stds is not None else None,
    )
