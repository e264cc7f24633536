"""The server's request and response models (its OpenAPI schema), and every refusal as one line.

The request models are built per served model: a row holds exactly ``obs_dim`` (or ``act_dim``)
finite float32 numbers and a request at most ``max_request_rows`` rows, so the schema itself says
what the server takes. Bodies are parsed by pydantic's own JSON parser (bounded nesting depth:
a deeply nested body is a 400, not a crash); its errors are turned into the sentence a user needs.
"""

from __future__ import annotations

import reprlib
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, create_model
from pydantic_core import ErrorDetails

from dynamics.serving.batching import Kind, ModelRequest
from dynamics.serving.wire import SEED_LIMIT
from mbrl_core.errors import MbrlError

FLOAT32_MAX = float(np.finfo(np.float32).max)
ROW_FIELDS = ("observations", "actions")
FIELDS = {"predict": ("observations", "actions", "per_member"), "step": ("observations", "actions", "seed")}
SEED_HINT = "an integer in [0, 2**64): a step request is sampled reproducibly from it"

Float32 = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX)]
Seed = Annotated[int, Field(strict=True, ge=0, lt=SEED_LIMIT, description=SEED_HINT)]
# JSON has no NaN or infinity: a non-finite output is sent as null
Output = float | None


def _shown(value: Any) -> str:
    """A short repr of a refused value (a request may be megabytes)."""
    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxstring, short.maxother = 2, 4, 30, 30
    return short.repr(value)


class Refusal(MbrlError):
    """A request the server refuses: ``status`` is the HTTP status (4xx), the message one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------- responses


class ErrorResponse(BaseModel):
    error: str = Field(description="what is wrong, in one line")


class StepResponse(BaseModel):
    next_observations: list[list[Output]]
    rewards: list[Output] = Field(description="raw, unpenalized")
    terminals: list[Output] = Field(description="0 or 1")
    uncertainty: dict[str, list[Output]] = Field(description="feature name -> one value per row")


class PredictResponse(StepResponse):
    member_means: list[list[list[Output]]] | None = Field(
        None, description="[members][rows][next obs..., reward], only with per_member"
    )
    member_stds: list[list[list[Output]]] | None = Field(None, description="as member_means, only with per_member")


class HealthResponse(BaseModel):
    status: str


class Limits(BaseModel):
    max_request_rows: int
    max_body_bytes: int


class Stats(BaseModel):
    requests_answered: int
    forward_passes: int


class InfoResponse(BaseModel):
    """The served model's metadata (as `mbrl dynamics show` prints it), limits and counters."""

    model_config = ConfigDict(extra="allow")

    key: str
    obs_dim: int
    act_dim: int
    elites: list[int]
    device: str
    uncertainty_features: list[str]
    limits: Limits
    stats: Stats


# ---------------------------------------------------------------------- requests


class RequestSchemas:
    """The predict and step request models of one served model, and their parsing."""

    def __init__(self, obs_dim: int, act_dim: int, max_rows: int) -> None:
        self.dims = {"observations": obs_dim, "actions": act_dim}
        self.max_rows = max_rows
        rows: dict[str, Any] = {name: self._rows(name, dim) for name, dim in self.dims.items()}
        forbid = ConfigDict(extra="forbid")
        self.models: dict[Kind, type[BaseModel]] = {
            "predict": create_model(
                "PredictRequest",
                __config__=forbid,
                **rows,
                per_member=(StrictBool, Field(False, description="also return every member's mean and std")),
            ),
            "step": create_model("StepRequest", __config__=forbid, **rows, seed=(Seed, ...)),
        }

    def _rows(self, name: str, dim: int) -> tuple[Any, Any]:
        rows = Annotated[
            list[Annotated[list[Float32], Field(min_length=dim, max_length=dim)]],
            Field(min_length=1, max_length=self.max_rows),
        ]
        return rows, Field(description=f"1 to {self.max_rows} rows of {dim} finite float32 numbers: the {name}")

    def json_schema(self, kind: Kind) -> dict[str, Any]:
        return self.models[kind].model_json_schema()

    def parse(self, kind: Kind, body: bytes) -> ModelRequest:
        try:
            parsed: Any = self.models[kind].model_validate_json(body)
        except ValidationError as error:
            raise self._refusal(kind, error.errors(include_url=False)) from None
        observations, actions = parsed.observations, parsed.actions
        if len(observations) != len(actions):
            raise Refusal(400, f"observations has {len(observations)} rows but actions has {len(actions)}")
        return ModelRequest(
            torch.from_numpy(np.array(observations, dtype=np.float32)),
            torch.from_numpy(np.array(actions, dtype=np.float32)),
            per_member=getattr(parsed, "per_member", False),
            seed=getattr(parsed, "seed", 0),
        )

    def _refusal(self, kind: Kind, problems: list[ErrorDetails]) -> Refusal:
        unknown = [str(problem["loc"][0]) for problem in problems if problem["type"] == "extra_forbidden"]
        if unknown:
            return Refusal(
                400, f"unknown field(s) {', '.join(unknown)}; a {kind} request has {', '.join(FIELDS[kind])}"
            )
        return self._describe(problems[0])

    def _describe(self, problem: ErrorDetails) -> Refusal:
        kind, loc, given = problem["type"], problem["loc"], problem.get("input")
        if not loc:
            if kind == "json_invalid":
                return Refusal(400, f"body is not valid JSON: {problem['msg'].removeprefix('Invalid JSON: ')}")
            return Refusal(400, f"body must be a JSON object, got {type(given).__name__}")
        name = str(loc[0])
        if name in ROW_FIELDS:
            return self._describe_rows(name, problem)
        if kind == "missing":
            return Refusal(400, f"missing field '{name}' ({SEED_HINT if name == 'seed' else 'required'})")
        if name == "per_member":
            return Refusal(400, f"per_member must be true or false, got {_shown(given)}")
        if name == "seed":
            return Refusal(400, f"seed must be an integer in [0, 2**64), got {_shown(given)}")
        return Refusal(400, f"{'.'.join(map(str, loc))}: {problem['msg']}")

    def _describe_rows(self, name: str, problem: ErrorDetails) -> Refusal:
        kind, loc, given = problem["type"], problem["loc"], problem.get("input")
        dim = self.dims[name]
        if len(loc) == 1:
            if kind == "missing":
                return Refusal(400, f"missing field '{name}' (a list of rows of {dim} numbers)")
            if kind == "too_long":
                return Refusal(
                    413,
                    f"{name} has {len(given)} rows, more than this server's limit of {self.max_rows} per request",
                )
            return Refusal(400, f"{name} must be a non-empty list of rows of {dim} numbers")
        row = loc[1]
        if len(loc) == 2:
            got = f"has {len(given)} numbers" if isinstance(given, list) else f"is {_shown(given)}, not a list"
            return Refusal(400, f"{name} must have shape [rows, {dim}]: row {row} {got}")
        if kind == "finite_number":
            return Refusal(400, f"{name} row {row} contains NaN or infinity")
        if kind in ("less_than_equal", "greater_than_equal"):
            return Refusal(400, f"{name} row {row} holds {given:g}, beyond float32's range (about 3.4e38)")
        return Refusal(400, f"{name} must hold numbers only: row {row} holds {_shown(given)}")
