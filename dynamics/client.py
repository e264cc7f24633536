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

from dynamics.server import TOKEN_ENV
from dynamics.service import ModelStep, Prediction
from dynamics.wire import decode_prediction, decode_step, encode_rows
from mbrl_core.errors import MbrlError

# a server that closed a kept-alive connection shows up as one of these on the next request
STALE_CONNECTION_ERRORS = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class RemoteError(MbrlError):
    """The server refused a request (``status`` 4xx) or failed on it (5xx); the message is the server's reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class DynamicsClient:
    def __init__(self, url: str = "http://127.0.0.1:8000", token: str | None = None, timeout: float = 60.0,
                 device: torch.device | str = "cpu") -> None:
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
        payload = {"observations": encode_rows(observations), "actions": encode_rows(actions), "per_member": per_member}
        return decode_prediction(self._request("POST", "/v1/predict", payload), self.device)

    def step(self, observations, actions, generator: torch.Generator | None = None, seed: int | None = None) -> ModelStep:
        """A model step sampled on the server from ``seed``, or from a seed drawn from ``generator``."""
        if seed is None:
            if generator is None:
                raise MbrlError("step needs a generator or a seed (the server samples reproducibly from a seed)")
            seed = int(torch.randint(0, torch.iinfo(torch.int64).max, (1,), generator=generator, device=generator.device))
        payload = {"observations": encode_rows(observations), "actions": encode_rows(actions), "seed": seed}
        return decode_step(self._request("POST", "/v1/step", payload), self.device)

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

    def info(self) -> dict[str, Any]:
        """The served model's metadata (key, spaces, elites, metrics, limits); fetched once.
        Unbounded space bounds come back as null (JSON has no infinity)."""
        if self._info is None:
            self._info = self._request("GET", "/v1/info")
        return self._info

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/health")

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def __enter__(self) -> "DynamicsClient":
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
                    raise MbrlError(f"dynamics server at {self.url} closed the connection during {method} {path}") from None
            except OSError as error:
                self.close()
                raise MbrlError(f"no dynamics server at {self.url} ({error}); start one with `mbrl dynamics serve <key>`") from None
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
