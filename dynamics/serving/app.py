"""The FastAPI application of one loaded dynamics model.

Endpoints: ``POST /v1/predict`` (elite-mean next observation, reward, terminal, uncertainty
features; per-member outputs with ``"per_member": true``), ``POST /v1/step`` (a sampled next state,
reproducible from the request's ``seed``), ``GET /v1/info`` (key, spaces, elites, metrics, limits,
counters), ``GET /health``; the OpenAPI schema at ``/openapi.json`` and its page at ``/docs``.

Model requests are read here (size limit before and while reading, content type), parsed and
validated by :mod:`.schemas`, and answered by the :mod:`.batching` worker. Every refusal is
``{"error": "<one line>"}`` with its 4xx status; with a token configured, every endpoint but
``/health`` and the docs asks for ``Authorization: Bearer <token>`` (the scheme in any case).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import FastAPI, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dynamics.service import DynamicsService
from dynamics.serving.batching import BatchingWorker, Kind, ModelRequest
from dynamics.serving.config import TOKEN_ENV, ServeConfig
from dynamics.serving.schemas import (
    ErrorResponse,
    HealthResponse,
    InfoResponse,
    PredictResponse,
    Refusal,
    RequestSchemas,
    StepResponse,
)
from dynamics.serving.wire import dumps, encode_prediction, encode_step, json_safe
from mbrl_core.contracts import UNCERTAINTY_FEATURES

# bytes a request may spend per number (a float's repr is <= 24 characters) plus room for formatting
BYTES_PER_NUMBER = 40
BODY_SLACK_BYTES = 1 << 20
ENDPOINTS = ("/health", "/v1/info", "/v1/predict", "/v1/step")

logger = logging.getLogger(__name__)
bearer = HTTPBearer(auto_error=False, description=f"the server's token ({TOKEN_ENV} or --token-file)")


def error_response(status: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class DynamicsAPI:
    """The routes and their state (the worker, the request schemas, the model's metadata); ``app`` is ASGI."""

    def __init__(self, service: DynamicsService, config: ServeConfig) -> None:
        obs_dim, act_dim = service.meta["obs_dim"], service.meta["act_dim"]
        self.config = config
        self.schemas = RequestSchemas(obs_dim, act_dim, config.max_request_rows)
        self.max_body_bytes = config.max_request_rows * (obs_dim + act_dim) * BYTES_PER_NUMBER + BODY_SLACK_BYTES
        self.worker = BatchingWorker(service, config.batch_rows, config.max_wait_ms)
        limits = {"max_request_rows": config.max_request_rows, "max_body_bytes": self.max_body_bytes}
        self.info = json_safe(
            {
                **service.meta,
                "device": str(service.device),
                "uncertainty_features": list(UNCERTAINTY_FEATURES),
                "limits": limits,
            }
        )
        self.app = FastAPI(
            title="mbrl dynamics service",
            version="1",
            summary=f"dynamics model {service.key} ({service.meta['dataset']['id']})",
            lifespan=self._lifespan,
            redoc_url=None,
        )
        self._add_routes()
        self._add_error_handlers()
        self.app.add_middleware(RequestLog)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        batching = asyncio.create_task(self.worker.run(), name="dynamics-batching")
        yield
        batching.cancel()  # the server answered every request before shutting the app down
        with contextlib.suppress(asyncio.CancelledError):
            await batching

    # ------------------------------------------------------------------ routes

    def _add_routes(self) -> None:
        guarded: list[Any] = [Security(self._check_token)] if self.config.token else []
        refusals: dict[int | str, dict[str, Any]] = {
            status: {"model": ErrorResponse, "description": description}
            for status, description in (
                (400, "malformed request: what is wrong, in one line"),
                (401, "missing or wrong bearer token"),
                (413, "more rows or bytes than this server takes per request"),
                (415, "not application/json"),
            )
            if status != 401 or self.config.token
        }
        add = self.app.add_api_route
        add("/health", self.health, methods=["GET"], response_model=HealthResponse)
        add(
            "/v1/info",
            self.describe,
            methods=["GET"],
            response_model=InfoResponse,
            dependencies=guarded,
            responses={401: refusals[401]} if self.config.token else {},
        )
        model_routes: list[tuple[str, Kind, Callable[[Request], Awaitable[Response]], type[BaseModel]]] = [
            ("/v1/predict", "predict", self.predict, PredictResponse),
            ("/v1/step", "step", self.step, StepResponse),
        ]
        for path, kind, answer, model in model_routes:
            body = {"required": True, "content": {"application/json": {"schema": self.schemas.json_schema(kind)}}}
            add(
                path,
                answer,
                methods=["POST"],
                response_model=model,
                dependencies=guarded,
                responses=refusals,
                openapi_extra={"requestBody": body},
            )

    async def _check_token(self, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]) -> None:
        token = self.config.token or ""
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise Refusal(401, "missing or wrong bearer token (send 'Authorization: Bearer <token>')")

    async def health(self) -> dict[str, Any]:
        """Alive: needs no token."""
        return {"status": "ok"}

    async def describe(self) -> dict[str, Any]:
        """The served model's metadata, this server's limits and its counters."""
        worker = self.worker
        return {
            **self.info,
            "stats": {"requests_answered": worker.requests_answered, "forward_passes": worker.forward_passes},
        }

    async def predict(self, request: Request) -> Response:
        """Elite-mean next observations, rewards, terminals and uncertainty features of each (obs, action) row."""
        prediction = await self.worker.predict(await self._read_model_request(request, "predict"))
        return _json(encode_prediction(prediction))

    async def step(self, request: Request) -> Response:
        """One sampled model step per row (a random elite and Gaussian noise), reproducible from ``seed``."""
        return _json(encode_step(await self.worker.step(await self._read_model_request(request, "step"))))

    async def _read_model_request(self, request: Request, kind: Kind) -> ModelRequest:
        with self.worker.arriving():
            model_request = self.schemas.parse(kind, await self._read_json_body(request))
        request.state.rows = model_request.rows  # for the request's log line
        return model_request

    async def _read_json_body(self, request: Request) -> bytes:
        limit = self.max_body_bytes
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise Refusal(413, f"body of {length} bytes exceeds this server's limit of {limit}")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise Refusal(
                415,
                f"Content-Type must be application/json, got '{content_type or 'none'}' (curl: add -H "
                "'Content-Type: application/json')",
            )
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise Refusal(413, f"body exceeds this server's limit of {limit} bytes")
        return bytes(body)

    # ------------------------------------------------------------------ errors

    def _add_error_handlers(self) -> None:
        handlers = {
            Refusal: _refused,
            HTTPException: _http_refusal,
            RequestValidationError: _invalid,
            Exception: _failed,
        }
        for error_class, handler in handlers.items():
            self.app.add_exception_handler(error_class, handler)  # type: ignore[arg-type]


def _json(payload: dict[str, Any]) -> Response:
    # encoded once, strictly (no NaN token), without FastAPI's generic encoder: responses are large lists
    return Response(dumps(payload), media_type="application/json")


async def _refused(request: Request, error: Refusal) -> JSONResponse:
    return error_response(error.status, str(error))


async def _http_refusal(request: Request, error: HTTPException) -> JSONResponse:
    path, method = request.url.path, request.method
    if error.status_code == 404:
        return error_response(404, f"no endpoint {path}; endpoints: {', '.join(ENDPOINTS)}")
    if error.status_code == 405:
        allowed = (error.headers or {}).get("Allow", "another method")
        return error_response(405, f"{path} takes {allowed}, not {method}")
    return error_response(error.status_code, str(error.detail))


async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
    problem = error.errors()[0]
    return error_response(400, f"{'.'.join(map(str, problem['loc']))}: {problem['msg']}")


async def _failed(request: Request, error: Exception) -> JSONResponse:
    # an unexpected failure: the server logs the traceback, the client gets one line
    return error_response(500, f"internal error: {type(error).__name__}: {error}")


class RequestLog:
    """At debug level, one line per request: client, method, path, status, rows, milliseconds."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not logger.isEnabledFor(logging.DEBUG):
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 0

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            client = scope.get("client") or ("-", 0)
            logger.debug(
                "%s %s %s %d rows=%d %.2fms",
                client[0],
                scope["method"],
                scope["path"],
                status,
                scope.get("state", {}).get("rows", 0),
                1000 * (time.perf_counter() - started),
            )
