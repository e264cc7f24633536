"""A Python client of the dynamics server with the in-process service's interface.

    model = DynamicsClient("http://127.0.0.1:8000")          # or DynamicsService.load(key)
    prediction = model.predict(obs, actions)                  # same Prediction as the service
    step = model.step(obs, actions, generator)                # same ModelStep as the service

``step`` sends a seed: the server answers exactly what the service returns for
``step(obs, actions, torch.Generator().manual_seed(seed))``. Given a generator,
the client draws that seed from it, so a seeded learner stays reproducible.

One keep-alive connection per thread; a request is resent once if the server
closed an idle connection under it (predict and seeded step are deterministic,
so a resend is safe).
"""

from __future__ import annotations

import http.client
import json
import os
import threading
from typing import Any
from urllib.parse import urlsplit

import torch

from dynamics.service import ModelStep, Prediction
from dynamics.serving.config import TOKEN_ENV
from dynamics.serving.wire import (
    concat_predictions,
    concat_steps,
    decode_prediction,
    decode_step,
    encode_rows,
)
from mbrl_core.errors import MbrlError

# a server that closed a kept-alive connection shows up as one of these on the next request
STALE_CONNECTION_ERRORS = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    BrokenPipeError,
    ConnectionAbortedError,
)


class RemoteError(MbrlError):
    """The server refused a request (``status`` 4xx) or failed on it (5xx); the message is the server's reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class DynamicsClient:
    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        token: str | None = None,
        timeout: float = 60.0,
        device: torch.device | str = "cpu",
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise MbrlError(f"dynamics server url must look like http://host:port, got '{url}'")
        self.url = url.rstrip("/")
        self.device = torch.device(device)
        self._connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self._host, self._port = parts.hostname, parts.port
        self._timeout = timeout
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._local = threading.local()
        self._info: dict[str, Any] | None = None

    # ------------------------------------------------------------------ the service's interface

    def predict(self, observations, actions, per_member: bool = False) -> Prediction:
        """The service's prediction; more rows than the server takes per request go as consecutive requests."""
        parts = [
            decode_prediction(
                self._request("POST", "/v1/predict", {"observations": obs, "actions": act, "per_member": per_member}),
                self.device,
            )
            for obs, act in self._blocks(observations, actions)
        ]
        return concat_predictions(parts)

    def step(
        self, observations, actions, generator: torch.Generator | None = None, seed: int | None = None
    ) -> ModelStep:
        """A model step sampled on the server from ``seed``, or from seeds drawn from ``generator``
        (one per block when the rows exceed the server's per-request limit)."""
        blocks = self._blocks(observations, actions)
        if seed is not None:
            if len(blocks) > 1:
                raise MbrlError(
                    f"step with an explicit seed must fit one request ({self.info()['limits']['max_request_rows']} "
                    "rows); pass a generator instead to split it"
                )
            seeds = [seed]
        elif generator is not None:
            seeds = [_draw_seed(generator) for _ in blocks]
        else:
            raise MbrlError("step needs a generator or a seed (the server samples reproducibly from a seed)")
        parts = [
            decode_step(
                self._request("POST", "/v1/step", {"observations": obs, "actions": act, "seed": block_seed}),
                self.device,
            )
            for (obs, act), block_seed in zip(blocks, seeds)
        ]
        return concat_steps(parts)

    def _blocks(self, observations, actions) -> list[tuple[list, list]]:
        """The rows as JSON-ready lists, in blocks of at most the server's per-request limit."""
        observations, actions = encode_rows(observations), encode_rows(actions)
        if len(observations) != len(actions):
            raise MbrlError(f"observations has {len(observations)} rows but actions has {len(actions)}")
        limit = self.info()["limits"]["max_request_rows"]
        return [
            (observations[i : i + limit], actions[i : i + limit]) for i in range(0, max(len(observations), 1), limit)
        ]

    @property
    def key(self) -> str:
        return self.info()["key"]

    @property
    def elites(self) -> list[int]:
        return list(self.info()["elites"])

    @property
    def metrics(self) -> dict[str, Any]:
        return self.info()["metrics"]

    @property
    def disagreement_stats(self) -> dict[str, float]:
        return self.info()["disagreement_stats"]

    def info(self, refresh: bool = False) -> dict[str, Any]:
        """The served model's metadata (key, spaces, elites, metrics, limits, server stats); fetched once
        unless ``refresh``. Unbounded space bounds come back as null (JSON has no infinity)."""
        if self._info is None or refresh:
            self._info = self._request("GET", "/v1/info")
        return self._info

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/health")

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def __enter__(self) -> DynamicsClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ transport

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connection_class(self._host, self._port, timeout=self._timeout)
            self._local.connection = connection
        return connection

    def _request(self, method: str, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        body = None if payload is None else json.dumps(payload).encode()
        for attempt in (1, 2):
            connection = self._connection()
            try:
                connection.request(method, path, body=body, headers=self._headers)
                response = connection.getresponse()
                content = response.read()
                break
            except STALE_CONNECTION_ERRORS:
                self.close()
                if attempt == 2:
                    raise MbrlError(
                        f"dynamics server at {self.url} closed the connection during {method} {path}"
                    ) from None
            except OSError as error:
                self.close()
                raise MbrlError(
                    f"no dynamics server at {self.url} ({error}); start one with `mbrl dynamics serve <key>`"
                ) from None
        if response.will_close:
            self.close()
        try:
            result = json.loads(content)
        except ValueError:
            result = None
        if response.status >= 400 or not isinstance(result, dict):
            reason = result.get("error") if isinstance(result, dict) else content[:200].decode(errors="replace")
            raise RemoteError(response.status, f"dynamics server {method} {path}: {response.status} {reason}")
        return result


def _draw_seed(generator: torch.Generator) -> int:
    return int(torch.randint(0, torch.iinfo(torch.int64).max, (1,), generator=generator, device=generator.device))
