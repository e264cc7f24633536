"""The JSON wire format of the dynamics server, shared by the server and the client.

Requests (JSON objects, rows are lists of numbers):
    POST /v1/predict  {"observations": [[...], ...], "actions": [[...], ...], "per_member": false}
    POST /v1/step     {"observations": [[...], ...], "actions": [[...], ...], "seed": 7}
Responses mirror :class:`dynamics.service.Prediction` and :class:`dynamics.service.ModelStep`
field by field; an error is ``{"error": "<one line>"}`` with a 4xx status.

JSON has no NaN or infinity, so a non-finite number in a response (an unbounded
space bound, an output overflowing far from the data) is sent as ``null``; the
client reads it back as NaN (or as -inf/+inf for a space's low/high).
Only JSON crosses the wire: nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dynamics.service import ModelStep, Prediction
from mbrl_core.errors import MbrlError

PREDICT_FIELDS = ("observations", "actions", "per_member")
STEP_FIELDS = ("observations", "actions", "seed")
SEED_LIMIT = 2**64  # torch.Generator.manual_seed accepts seeds in [0, 2**64)


class WireError(MbrlError):
    """A request the server refuses: ``status`` is the HTTP status (4xx), the message one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class ModelRequest:
    """A validated predict or step request."""

    observations: torch.Tensor  # [B, obs_dim] float32
    actions: torch.Tensor  # [B, act_dim] float32
    per_member: bool = False
    seed: int | None = None

    @property
    def rows(self) -> int:
        return self.observations.shape[0]


# ---------------------------------------------------------------------- requests (server side)


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError) as error:
        raise WireError(400, f"body is not valid JSON: {error}") from error
    if not isinstance(payload, dict):
        raise WireError(400, f"body must be a JSON object, got {type(payload).__name__}")
    return payload


def parse_model_request(body: bytes, kind: str, obs_dim: int, act_dim: int, max_rows: int) -> ModelRequest:
    """Validate a predict (``kind="predict"``) or step request against the model's dims and the row limit."""
    payload = parse_json_object(body)
    allowed = PREDICT_FIELDS if kind == "predict" else STEP_FIELDS
    unknown = sorted(set(payload) - set(allowed))
    if unknown:
        raise WireError(400, f"unknown field(s) {', '.join(unknown)}; a {kind} request has {', '.join(allowed)}")
    observations = _rows(payload, "observations", obs_dim, max_rows)
    actions = _rows(payload, "actions", act_dim, max_rows)
    if len(observations) != len(actions):
        raise WireError(400, f"observations has {len(observations)} rows but actions has {len(actions)}")
    request = ModelRequest(torch.from_numpy(observations), torch.from_numpy(actions))
    if kind == "predict":
        request.per_member = payload.get("per_member", False)
        if not isinstance(request.per_member, bool):
            raise WireError(400, f"per_member must be true or false, got {request.per_member!r}")
    else:
        request.seed = _seed(payload)
    return request


def _rows(payload: dict[str, Any], name: str, dim: int, max_rows: int) -> np.ndarray:
    """``payload[name]`` as a float32 [rows, dim] array of finite numbers, or a WireError saying what is wrong."""
    if name not in payload:
        raise WireError(400, f"missing field '{name}' (a list of rows of {dim} numbers)")
    value = payload[name]
    if not isinstance(value, list) or not value:
        raise WireError(400, f"{name} must be a non-empty list of rows of {dim} numbers")
    if len(value) > max_rows:
        raise WireError(413, f"{name} has {len(value)} rows, more than this server's limit of {max_rows} per request")
    try:
        array = np.array(value)
    except ValueError as error:  # ragged rows
        raise WireError(400, f"{name} must be a list of rows of {dim} numbers each ({error})") from error
    if array.dtype.kind not in "iuf":
        raise WireError(400, f"{name} must hold numbers only")
    if array.ndim != 2 or array.shape[1] != dim:
        raise WireError(400, f"{name} must have shape [rows, {dim}], got {list(array.shape)}")
    with np.errstate(over="ignore"):
        array = array.astype(np.float32)
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        raise WireError(
            400, f"{name} row {int(np.argmin(finite))} contains NaN or infinity (or a number beyond float32's range)"
        )
    return array


def _seed(payload: dict[str, Any]) -> int:
    seed = payload.get("seed")
    if seed is None:
        raise WireError(400, "missing field 'seed' (an integer: a step request is sampled reproducibly from it)")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise WireError(400, f"seed must be an integer in [0, 2**64), got {seed!r}")
    return seed


# ---------------------------------------------------------------------- batching helpers


def join_requests(requests: list[ModelRequest]) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of several requests stacked into one model input."""
    return torch.cat([r.observations for r in requests]), torch.cat([r.actions for r in requests])


def slice_prediction(prediction: Prediction, start: int, stop: int, per_member: bool) -> Prediction:
    """Rows ``start:stop`` of a batched prediction (the member outputs only when asked for)."""
    rows = slice(start, stop)
    return Prediction(
        prediction.next_observations[rows],
        prediction.rewards[rows],
        prediction.terminals[rows],
        {name: values[rows] for name, values in prediction.uncertainty.items()},
        prediction.member_means[:, rows] if per_member else None,
        prediction.member_stds[:, rows] if per_member else None,
    )


def concat_predictions(parts: list[Prediction]) -> Prediction:
    """Predictions of consecutive row blocks as one (a client splitting a request larger than the server's limit)."""
    members = parts[0].member_means is not None
    return Prediction(
        *_concat_outputs(parts),
        torch.cat([p.member_means for p in parts], dim=1) if members else None,
        torch.cat([p.member_stds for p in parts], dim=1) if members else None,
    )


def concat_steps(parts: list[ModelStep]) -> ModelStep:
    return ModelStep(*_concat_outputs(parts))


def _concat_outputs(parts: list[Prediction] | list[ModelStep]) -> tuple:
    return (
        torch.cat([p.next_observations for p in parts]),
        torch.cat([p.rewards for p in parts]),
        torch.cat([p.terminals for p in parts]),
        {name: torch.cat([p.uncertainty[name] for p in parts]) for name in parts[0].uncertainty},
    )


# ---------------------------------------------------------------------- responses


def encode_prediction(prediction: Prediction) -> dict[str, Any]:
    payload = _encode_outputs(prediction)
    if prediction.member_means is not None:
        payload["member_means"] = _numbers(prediction.member_means)
        payload["member_stds"] = _numbers(prediction.member_stds)
    return payload


def encode_step(step: ModelStep) -> dict[str, Any]:
    return _encode_outputs(step)


def _encode_outputs(outputs: Prediction | ModelStep) -> dict[str, Any]:
    return {
        "next_observations": _numbers(outputs.next_observations),
        "rewards": _numbers(outputs.rewards),
        "terminals": _numbers(outputs.terminals),
        "uncertainty": {name: _numbers(values) for name, values in outputs.uncertainty.items()},
    }


def _numbers(tensor: torch.Tensor) -> list:
    array = tensor.detach().cpu().numpy()
    if np.isfinite(array).all():
        return array.tolist()
    return np.where(np.isfinite(array), array, None).tolist()


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (for metadata such as unbounded spaces)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def dumps(payload: Any) -> bytes:
    """Strict JSON (``allow_nan=False``: a NaN that slipped through is a bug, not a silent 'NaN' token)."""
    return json.dumps(payload, allow_nan=False, separators=(",", ":")).encode()


# ---------------------------------------------------------------------- client side: rows out, responses in


def decode_prediction(payload: dict[str, Any], device: torch.device | str = "cpu") -> Prediction:
    members = "member_means" in payload
    return Prediction(
        *_decode_outputs(payload, device),
        _tensor(payload["member_means"], device) if members else None,
        _tensor(payload["member_stds"], device) if members else None,
    )


def decode_step(payload: dict[str, Any], device: torch.device | str = "cpu") -> ModelStep:
    return ModelStep(*_decode_outputs(payload, device))


def _decode_outputs(payload: dict[str, Any], device) -> tuple:
    return (
        _tensor(payload["next_observations"], device),
        _tensor(payload["rewards"], device),
        _tensor(payload["terminals"], device),
        {name: _tensor(values, device) for name, values in payload["uncertainty"].items()},
    )


def _tensor(values: list, device) -> torch.Tensor:
    # dtype=float32 reads null as NaN
    return torch.from_numpy(np.array(values, dtype=np.float32)).to(device)


def encode_rows(values: Any) -> list:
    """A tensor, array or nested list of rows as JSON-ready lists of floats (float32 values, sent exactly)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float32).numpy()
    return np.asarray(values, dtype=np.float32).tolist()
