"""`mbrl dynamics serve`: one loaded dynamics ensemble answering many processes over HTTP.

    mbrl dynamics serve <key> --host 127.0.0.1 --port 8000
    curl -X POST localhost:8000/v1/predict -H 'Content-Type: application/json' \\
         -d '{"observations": [[0, 0, 0, 0]], "actions": [[0]]}'

Endpoints: ``POST /v1/predict`` (elite-mean next observation, reward, terminal,
uncertainty features; per-member outputs with ``"per_member": true``),
``POST /v1/step`` (a sampled next state, reproducible from the request's
``seed``), ``GET /v1/info`` (key, spaces, elites, metrics, limits) and
``GET /health``. The wire format is in :mod:`dynamics.wire`; the Python client,
with the service's predict/step interface, in :mod:`dynamics.client`.

Built on the standard library's ``ThreadingHTTPServer`` (no extra dependency):
one thread per connection parses and validates JSON, and a single batching
worker owns the model, so requests arriving within ``max_wait_ms`` of each other
share one forward pass (a step is still sampled from its own seed alone).
Loopback only unless a bearer token is configured (or ``--insecure``);
SIGINT/SIGTERM stop accepting, finish what is in flight, exit 0.

Module-level imports are standard library only: ``mbrl --help`` imports this
module to list the subcommand, and must not pay for torch.
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import logging
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mbrl_core.errors import ConfigError

HELP = "serve a stored dynamics ensemble over HTTP (predict/step/info/health, batched, JSON only)"
TOKEN_ENV = "MBRL_SERVE_TOKEN"
# bytes a request may spend per number (a float's repr is <= 24 characters) plus room for formatting
BYTES_PER_NUMBER = 40
BODY_SLACK_BYTES = 1 << 20

logger = logging.getLogger(__name__)


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    # shared secret expected as "Authorization: Bearer <token>" on every endpoint but /health
    token: str | None = None
    # allow a non-loopback host without a token (e.g. behind an authenticating proxy)
    insecure: bool = False
    # requests with more rows are refused (413)
    max_request_rows: int = 4096
    # the batching worker stops gathering requests at this many rows...
    batch_rows: int = 8192
    # ...or when the first gathered request has waited this long
    max_wait_ms: float = 2.0
    # concurrent connections; one more is answered 503 and closed
    max_connections: int = 64
    # seconds a connection may sit silent (between or inside requests) before it is closed
    idle_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.token is not None and not self.token.strip():
            raise ConfigError("the serve token is empty; set a non-empty secret or none")
        for name in ("max_request_rows", "batch_rows", "max_connections"):
            if getattr(self, name) < 1:
                raise ConfigError(f"serve {name} must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0 or self.idle_timeout <= 0:
            raise ConfigError("serve max_wait_ms must be >= 0 and idle_timeout > 0")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_bind_allowed(config: ServeConfig) -> None:
    """Refuse to expose the model beyond this machine without a token, unless explicitly insecure."""
    if not is_loopback(config.host) and config.token is None and not config.insecure:
        raise ConfigError(
            f"refusing to serve on non-loopback host '{config.host}' without a token: set {TOKEN_ENV} or --token-file "
            "(clients send 'Authorization: Bearer <token>'), or pass --insecure"
        )


# ---------------------------------------------------------------------- batching


@dataclass
class Job:
    kind: str  # "predict" or "step"
    request: Any  # dynamics.wire.ModelRequest
    future: Future


_STOP = object()


class BatchingWorker:
    """Owns the model: gathers queued requests and answers all predict requests of a gathering with ONE
    forward pass, and all step requests with another, split back per request.

    Gathering stops at ``batch_rows`` rows, after ``max_wait_ms``, or as soon as every request the HTTP
    side is handling (``requests_in_progress()``) has joined: a lone client never waits for company.

    A step is reproducible from its own seed: ``DynamicsService.step_segments`` draws each request's
    elites and noise from that request's generator, whichever requests share its forward pass.
    """

    def __init__(
        self, service, batch_rows: int, max_wait_ms: float, requests_in_progress: Callable[[], int] | None = None
    ) -> None:
        self.service = service
        self.requests_in_progress = requests_in_progress or (lambda: float("inf"))
        self.batch_rows = batch_rows
        self.max_wait = max_wait_ms / 1000.0
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="dynamics-batcher", daemon=True)
        self.requests_answered = 0
        self.forward_passes = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, kind: str, request) -> Future:
        job = Job(kind, request, Future())
        self._queue.put(job)
        return job.future

    def stop(self) -> None:
        """Answer everything already queued, then end the thread."""
        self._queue.put(_STOP)
        self._thread.join()

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            jobs, stopping = self._gather(first)
            self._answer(jobs)
            self.requests_answered += len(jobs)
            if stopping:
                return

    def _gather(self, first: Job) -> tuple[list[Job], bool]:
        jobs, rows = [first], first.request.rows
        deadline = time.monotonic() + self.max_wait
        while rows < self.batch_rows and len(jobs) < self.requests_in_progress():
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is _STOP:
                return jobs, True
            jobs.append(job)
            rows += job.request.rows
        return jobs, False

    def _answer(self, jobs: list[Job]) -> None:
        for kind, compute in (("predict", self._predict_batch), ("step", self._step_batch)):
            group = [job for job in jobs if job.kind == kind]
            if group:
                self._settle(group, compute)

    @staticmethod
    def _settle(jobs: list[Job], compute: Callable[[list[Job]], list]) -> None:
        try:
            results = compute(jobs)
        except Exception as error:  # an unexpected model failure answers 500; the worker keeps serving
            for job in jobs:
                job.future.set_exception(error)
            return
        for job, result in zip(jobs, results):
            job.future.set_result(result)

    def _predict_batch(self, jobs: list[Job]) -> list:
        from dynamics.wire import join_requests, slice_prediction

        observations, actions = join_requests([job.request for job in jobs])
        per_member = any(job.request.per_member for job in jobs)
        prediction = self.service.predict(observations, actions, per_member=per_member)
        self.forward_passes += 1
        results, start = [], 0
        for job in jobs:
            stop = start + job.request.rows
            results.append(slice_prediction(prediction, start, stop, job.request.per_member))
            start = stop
        return results

    def _step_batch(self, jobs: list[Job]) -> list:
        import torch

        from dynamics.wire import join_requests

        observations, actions = join_requests([job.request for job in jobs])
        device = self.service.device
        segments = [(job.request.rows, torch.Generator(device=device).manual_seed(job.request.seed)) for job in jobs]
        steps = self.service.step_segments(observations, actions, segments)
        self.forward_passes += 1
        return steps


# ---------------------------------------------------------------------- HTTP


class DynamicsServer(ThreadingHTTPServer):
    """The HTTP front of one loaded :class:`~dynamics.service.DynamicsService`."""

    # handler threads are joined on close so in-flight requests finish
    daemon_threads = False
    block_on_close = True

    def __init__(self, service, config: ServeConfig | None = None) -> None:
        from dynamics.uncertainty import FEATURE_NAMES
        from dynamics.wire import json_safe

        self.config = config or ServeConfig()
        check_bind_allowed(self.config)
        self.service = service
        self.obs_dim, self.act_dim = service.meta["obs_dim"], service.meta["act_dim"]
        dims = self.obs_dim + self.act_dim
        self.max_body_bytes = self.config.max_request_rows * dims * BYTES_PER_NUMBER + BODY_SLACK_BYTES
        limits = {"max_request_rows": self.config.max_request_rows, "max_body_bytes": self.max_body_bytes}
        info = {
            **service.meta,
            "device": str(service.device),
            "uncertainty_features": list(FEATURE_NAMES),
            "limits": limits,
        }
        self.info = json_safe(info)
        self.worker = BatchingWorker(service, self.config.batch_rows, self.config.max_wait_ms, self.busy_connections)
        self.stopping = False
        self._connections: dict[socket.socket, bool] = {}  # open connection -> busy answering a request
        self._connections_lock = threading.Lock()
        self._serve_thread: threading.Thread | None = None
        if ":" in self.config.host:
            self.address_family = socket.AF_INET6
        super().__init__((self.config.host, self.config.port), RequestHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> DynamicsServer:
        """Serve from a background thread (tests, notebooks); :meth:`stop` ends it."""
        self.worker.start()
        self._serve_thread = threading.Thread(target=self.serve_forever, name="dynamics-http", daemon=True)
        self._serve_thread.start()
        return self

    def stop(self) -> None:
        """Graceful: stop accepting, close idle keep-alive connections, finish in-flight requests."""
        if self._serve_thread is None:
            self.server_close()
            return
        self.shutdown()  # returns once the accept loop has ended: every accepted socket is registered
        with self._connections_lock:
            self.stopping = True
            idle = [connection for connection, busy in self._connections.items() if not busy]
        for connection in idle:
            # wakes the handler blocked reading the next request; a request racing in at this
            # instant sees the connection close, which HTTP allows for idle connections
            _shutdown_socket(connection)
        self.server_close()  # joins the handler threads: busy ones answer, then close
        self.worker.stop()
        self._serve_thread.join()
        self._serve_thread = None

    # -------------------------------------------------------------- connection bookkeeping

    def process_request(self, request, client_address) -> None:
        with self._connections_lock:
            full = len(self._connections) >= self.config.max_connections
            if not full:
                self._connections[request] = False
        if full:
            _refuse_busy(request)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self._connections_lock:
            self._connections.pop(request, None)
        super().shutdown_request(request)

    def busy_connections(self) -> int:
        with self._connections_lock:
            return sum(self._connections.values())

    def mark_busy(self, connection: socket.socket, busy: bool) -> None:
        with self._connections_lock:
            if connection in self._connections:
                self._connections[connection] = busy

    def handle_error(self, request, client_address) -> None:
        # a client hanging up mid-response is routine: a debug line, not a traceback on stderr
        logger.debug("connection from %s ended with an error", client_address[0], exc_info=True)


def _shutdown_socket(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the peer


def _refuse_busy(connection: socket.socket) -> None:
    body = b'{"error":"too many connections; retry later"}'
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    try:
        connection.sendall(head.encode() + body)
    except OSError:
        pass


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a client's sequential requests reuse one connection
    server_version = "mbrl-dynamics/1"
    server: DynamicsServer

    def setup(self) -> None:
        self.timeout = self.server.config.idle_timeout
        super().setup()
        # headers and body are separate writes: without this, Nagle's algorithm holds the body
        # until the client's delayed ACK of the headers (tens of ms per request)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        from dynamics.wire import WireError, dumps

        started = time.perf_counter()
        self.server.mark_busy(self.connection, True)
        self._rows = 0
        try:
            status, payload = 200, self._route(method)
        except WireError as error:
            status, payload = error.status, {"error": str(error)}
        except Exception as error:
            logger.exception("%s %s failed", method, self.path)
            status, payload = 500, {"error": f"internal error: {type(error).__name__}: {error}"}
        if self.server.stopping:
            self.close_connection = True
        self._send(status, dumps(payload))
        self.server.mark_busy(self.connection, False)
        logger.debug(
            "%s %s %s %d rows=%d %.2fms",
            self.client_address[0],
            method,
            self.path,
            status,
            self._rows,
            1000 * (time.perf_counter() - started),
        )

    def _route(self, method: str) -> dict[str, Any]:
        from dynamics.wire import WireError

        path = urlsplit(self.path).path
        routes = {
            "/health": ("GET", self._health),
            "/v1/info": ("GET", self._info),
            "/v1/predict": ("POST", self._predict),
            "/v1/step": ("POST", self._step),
        }
        if path not in routes:
            self.close_connection = method == "POST"  # an unread body would be taken for the next request
            raise WireError(404, f"no endpoint {path}; endpoints: {', '.join(routes)}")
        expected, answer = routes[path]
        if method != expected:
            self.close_connection = method == "POST"
            raise WireError(405, f"{path} takes {expected}, not {method}")
        if path != "/health":
            self._authorize()
        return answer()

    def _authorize(self) -> None:
        from dynamics.wire import WireError

        token = self.server.config.token
        if token is None:
            return
        given = self.headers.get("Authorization", "")
        expected = f"Bearer {token}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            self.close_connection = True
            raise WireError(401, "missing or wrong bearer token (send 'Authorization: Bearer <token>')")

    def _health(self) -> dict[str, Any]:
        return {"status": "stopping" if self.server.stopping else "ok"}

    def _info(self) -> dict[str, Any]:
        worker = self.server.worker
        return {
            **self.server.info,
            "stats": {"requests_answered": worker.requests_answered, "forward_passes": worker.forward_passes},
        }

    def _predict(self) -> dict[str, Any]:
        from dynamics.wire import encode_prediction

        return encode_prediction(self._run_model("predict"))

    def _step(self) -> dict[str, Any]:
        from dynamics.wire import encode_step

        return encode_step(self._run_model("step"))

    def _run_model(self, kind: str):
        from dynamics.wire import parse_model_request

        body = self._read_json_body()
        request = parse_model_request(
            body, kind, self.server.obs_dim, self.server.act_dim, self.server.config.max_request_rows
        )
        self._rows = request.rows
        return self.server.worker.submit(kind, request).result()

    def _read_json_body(self) -> bytes:
        from dynamics.wire import WireError

        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or length is None:
            self.close_connection = True
            raise WireError(411, "send the body with a Content-Length header (chunked bodies are not accepted)")
        if not length.isdigit():
            self.close_connection = True
            raise WireError(400, f"bad Content-Length {length!r}")
        if int(length) > self.server.max_body_bytes:
            self.close_connection = True
            raise WireError(413, f"body of {length} bytes exceeds this server's limit of {self.server.max_body_bytes}")
        body = self.rfile.read(int(length))
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise WireError(
                415,
                f"Content-Type must be application/json, got '{content_type or 'none'}' (curl: add -H "
                "'Content-Type: application/json')",
            )
        return body

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if status == 401:
            self.send_header("WWW-Authenticate", "Bearer")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own refusals (garbled request line, oversized headers, unknown method) as JSON too."""
        from dynamics.wire import dumps

        self.close_connection = True
        self.request_version = "HTTP/1.1"  # a garbled request line leaves "HTTP/0.9", which has no status line
        self._send(code, dumps({"error": message or HTTPStatus(code).phrase}))

    def log_request(self, code="-", size="-") -> None:
        pass  # _handle logs one line per request, with its rows and duration

    def log_message(self, format: str, *args) -> None:
        logger.debug("%s %s", self.client_address[0], format % args)


# ---------------------------------------------------------------------- command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ServeConfig()
    parser.add_argument("key", help="model key (or a unique prefix of one), see `mbrl dynamics list`")
    parser.add_argument(
        "--store",
        default=None,
        help="artifact folder (default: MBRL_DYNAMICS_STORE, else ~/.cache/mbrl-offline-suite/dynamics)",
    )
    parser.add_argument(
        "--host",
        default=defaults.host,
        help="address to bind (default loopback; another host needs a token or --insecure)",
    )
    parser.add_argument("--port", type=int, default=defaults.port, help="port (0 picks a free one, printed at start)")
    parser.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch CPU threads for the model (default 1: between many small forward passes, idle OpenMP "
        "workers spin and starve the HTTP threads; raise it for large batches on many cores)",
    )
    parser.add_argument(
        "--token-file",
        default=None,
        help=f"file holding the shared secret clients send as 'Authorization: Bearer <token>' (or set {TOKEN_ENV})",
    )
    parser.add_argument("--insecure", action="store_true", help="allow a non-loopback host without a token")
    parser.add_argument(
        "--max-request-rows", type=int, default=defaults.max_request_rows, help="rows allowed per request (more: 413)"
    )
    parser.add_argument(
        "--batch-rows", type=int, default=defaults.batch_rows, help="rows gathered into one forward pass at most"
    )
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=defaults.max_wait_ms,
        help="how long a request waits for others to batch with",
    )
    parser.add_argument(
        "--max-connections", type=int, default=defaults.max_connections, help="concurrent connections (more: 503)"
    )
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning"), help="debug logs one line per request"
    )


def read_token(token_file: str | None) -> str | None:
    if token_file is not None:
        try:
            return Path(token_file).read_text().strip()
        except OSError as error:
            raise ConfigError(f"cannot read --token-file {token_file}: {error.strerror}") from error
    return os.environ.get(TOKEN_ENV) or None


def run(args: argparse.Namespace) -> int:
    import torch

    from dynamics.service import DynamicsService
    from mbrl_core.device import select_device

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = ServeConfig(
        args.host,
        args.port,
        read_token(args.token_file),
        args.insecure,
        args.max_request_rows,
        args.batch_rows,
        args.max_wait_ms,
        args.max_connections,
    )
    check_bind_allowed(config)  # before loading the model: fail fast
    torch.set_num_threads(args.torch_threads)
    service = DynamicsService.load(args.key, store=args.store, device=select_device(args.device))
    try:
        server = DynamicsServer(service, config)
    except OSError as error:
        raise ConfigError(f"cannot bind {config.host}:{config.port}: {error.strerror}") from error
    stop_requested = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop_requested.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        print(f"serving dynamics model {service.key} ({service.meta['dataset']['id']}) at {server.url}", flush=True)
        while not stop_requested.wait(0.5):
            pass
        logger.info("stopping: finishing in-flight requests")
        server.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("server stopped", flush=True)
    return 0
