"""`mbrl dynamics serve`: one loaded dynamics ensemble answering many processes over HTTP.

    mbrl dynamics serve <key> --host 127.0.0.1 --port 8000
    curl -X POST localhost:8000/v1/predict -H 'Content-Type: application/json' \\
         -d '{"observations": [[0, 0, 0, 0]], "actions": [[0]]}'   # a model of InvertedPendulum (4 + 1)

The service itself is :mod:`dynamics.serving` (FastAPI + uvicorn, the ``serve`` extra); its schema is
at ``/openapi.json`` and its docs page at ``/docs``. The Python client is :mod:`dynamics.client`.
Loopback by default; another address needs a token. SIGINT/SIGTERM stop accepting, finish what is
in flight, exit 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from pathlib import Path

import torch

from dynamics.service import DynamicsService
from dynamics.serving.config import TOKEN_ENV, ServeConfig, check_bind_allowed
from mbrl_core.device import select_device
from mbrl_core.errors import ConfigError

HELP = "serve a stored dynamics ensemble over HTTP (predict/step/info/health, batched, JSON, OpenAPI at /docs)"
# the modules of the serve extra: without them, this command says how to install them
SERVE_EXTRA_MODULES = {"fastapi", "starlette", "pydantic", "pydantic_core", "uvicorn"}
INSTALL_HINT = 'pip install "mbrl-offline-suite[serve]"'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ServeConfig()
    parser.add_argument("key", help="model key (or a unique prefix of one), see `mbrl dynamics list`")
    parser.add_argument(
        "--store",
        default=None,
        help="artifact folder (default: MBRL_DYNAMICS_STORE, else ~/.cache/mbrl-offline-suite/dynamics)",
    )
    parser.add_argument(
        "--host", default=defaults.host, help="address to bind (default loopback; another address needs a token)"
    )
    parser.add_argument("--port", type=int, default=defaults.port, help="port (0 picks a free one, printed at start)")
    parser.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch CPU threads for the model (default 1: between many small forward passes, idle OpenMP "
        "workers spin and starve the HTTP thread; raise it for large batches on many cores)",
    )
    parser.add_argument(
        "--token-file",
        default=None,
        help=f"file holding the shared secret clients send as 'Authorization: Bearer <token>' (or set {TOKEN_ENV})",
    )
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
        help="how long a batch waits for requests still arriving",
    )
    parser.add_argument(
        "--idle-timeout",
        type=int,
        default=defaults.idle_timeout,
        help="seconds an idle kept-alive connection stays open",
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
    try:  # the serve extra is optional: the rest of the project works without it
        from dynamics.serving.server import DynamicsServer
    except ModuleNotFoundError as error:
        if error.name not in SERVE_EXTRA_MODULES:
            raise
        raise ConfigError(
            f"mbrl dynamics serve needs the serve extra ({error.name} is missing): {INSTALL_HINT}"
        ) from None
    config = ServeConfig(
        host=args.host,
        port=args.port,
        token=read_token(args.token_file),
        max_request_rows=args.max_request_rows,
        batch_rows=args.batch_rows,
        max_wait_ms=args.max_wait_ms,
        idle_timeout=args.idle_timeout,
    )
    check_bind_allowed(config)  # before loading the model: fail fast
    if args.torch_threads < 1:
        raise ConfigError(f"--torch-threads must be >= 1, got {args.torch_threads}")
    configure_logging(args.log_level)
    torch.set_num_threads(args.torch_threads)
    service = DynamicsService.load(args.key, store=args.store, device=select_device(args.device))
    server = DynamicsServer(service, config)
    stop_requested = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop_requested.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        print(f"serving dynamics model {service.key} ({service.meta['dataset']['id']}) at {server.url}", flush=True)
        while not stop_requested.wait(0.5):
            pass
        logging.getLogger(__name__).info("stopping: finishing in-flight requests")
        server.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("server stopped", flush=True)
    return 0


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # uvicorn's own start/stop lines only when debugging: the command prints its own
    logging.getLogger("uvicorn.error").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
