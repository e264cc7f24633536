"""uvicorn serving the dynamics app, from a background thread, on a socket bound here.

Binding here (not inside uvicorn) turns a taken port or a bad address into one line, and gives
the port the system picked for port 0 before anything is served. One event loop reads and
validates requests; idle or slowly sending connections cost it nothing but a socket, so they
never starve the others. :meth:`DynamicsServer.stop` is graceful: stop accepting, close idle
kept-alive connections, answer every request in flight, then stop the batching worker.
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from dynamics.service import DynamicsService
from dynamics.serving.app import DynamicsAPI
from dynamics.serving.batching import BatchingWorker
from dynamics.serving.config import ServeConfig, check_bind_allowed
from mbrl_core.errors import ConfigError

STARTUP_SECONDS = 60.0


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as error:  # in use, not an address of this machine, unknown host name
        raise ConfigError(f"cannot bind {host}:{port}: {error.strerror or error}") from None


class DynamicsServer:
    """The HTTP front of one loaded :class:`~dynamics.service.DynamicsService`."""

    def __init__(self, service: DynamicsService, config: ServeConfig | None = None) -> None:
        self.config = config or ServeConfig()
        check_bind_allowed(self.config)
        self.api = DynamicsAPI(service, self.config)
        self.socket = bind(self.config.host, self.config.port)
        self.host, self.port = self.socket.getsockname()[:2]
        self._uvicorn = uvicorn.Server(
            uvicorn.Config(
                self.api.app,
                log_config=None,  # the application configures logging
                access_log=False,  # the app logs one line per request, with its rows
                timeout_keep_alive=self.config.idle_timeout,
            )
        )
        self._thread: threading.Thread | None = None

    @property
    def worker(self) -> BatchingWorker:
        return self.api.worker

    @property
    def url(self) -> str:
        return f"http://[{self.host}]:{self.port}" if ":" in self.host else f"http://{self.host}:{self.port}"

    def start(self) -> DynamicsServer:
        """Serve from a background thread (the CLI, tests, notebooks) until :meth:`stop`."""
        self._thread = threading.Thread(
            target=self._uvicorn.run, kwargs={"sockets": [self.socket]}, name="dynamics-http", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + STARTUP_SECONDS
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the dynamics server did not start (see the log above)")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop accepting, close idle connections, answer the requests in flight; returns when all is done."""
        if self._thread is not None:
            self._uvicorn.should_exit = True
            self._thread.join()
            self._thread = None
        self.socket.close()
