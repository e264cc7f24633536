"""The JSON wire format of the dynamics server: tensors to JSON and back, for the server and the client.

Requests (JSON objects, rows are lists of numbers):
    POST /v1/predict  {"observations": [[...], ...], "actions": [[...], ...], "per_member": false}
    POST /v1/step     {"observations": [[...], ...], "actions": [[...], ...], "seed": 7}
Responses mirror :class:`dynamics.service.Prediction` and :class:`dynamics.service.ModelStep`
field by field; an error is ``{"error": "<one line>"}`` with a 4xx status. The exact shapes are
the server's OpenAPI schema (``GET /openapi.json``, :mod:`dynamics.serving.schemas`).

JSON has no NaN or infinity, so a non-finite number in a response (an unbounded
space bound, an output overflowing far from the data) is sent as ``null``; the
client reads it back as NaN (or as -inf/+inf for a space's low/high).
Only JSON crosses the wire: nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import torch

from dynamics.service import ModelStep, Prediction

SEED_LIMIT = 2**64  # torch.Generator.manual_seed accepts seeds in [0, 2**64)


# ---------------------------------------------------------------------- responses (server side)


def encode_prediction(prediction: Prediction) -> dict[str, Any]:
    payload = _encode_outputs(prediction)
    if prediction.member_means is not None and prediction.member_stds is not None:
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
    finite = np.isfinite(array)
    if finite.all():
        return array.tolist()
    values = array.astype(object)
    values[~finite] = None
    return values.tolist()


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


def encode_rows(values: Any) -> list:
    """A tensor, array or nested list of rows as JSON-ready lists of floats (float32 values, sent exactly)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float32).numpy()
    return np.asarray(values, dtype=np.float32).tolist()


def decode_prediction(payload: dict[str, Any], device: torch.device | str = "cpu") -> Prediction:
    members = "member_means" in payload
    return Prediction(
        *_decode_outputs(payload, device),
        _tensor(payload["member_means"], device) if members else None,
        _tensor(payload["member_stds"], device) if members else None,
    )


def decode_step(payload: dict[str, Any], device: torch.device | str = "cpu") -> ModelStep:
    return ModelStep(*_decode_outputs(payload, device))


def _decode_outputs(
    payload: dict[str, Any], device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    return (
        _tensor(payload["next_observations"], device),
        _tensor(payload["rewards"], device),
        _tensor(payload["terminals"], device),
        {name: _tensor(values, device) for name, values in payload["uncertainty"].items()},
    )


def _tensor(values: list, device: torch.device | str) -> torch.Tensor:
    # dtype=float32 reads null as NaN
    return torch.from_numpy(np.array(values, dtype=np.float32)).to(device)


def concat_predictions(parts: list[Prediction]) -> Prediction:
    """Predictions of consecutive row blocks as one (a client splitting a request larger than the server's limit)."""
    member_means = [p.member_means for p in parts if p.member_means is not None]
    member_stds = [p.member_stds for p in parts if p.member_stds is not None]
    return Prediction(
        *_concat_outputs(parts),
        torch.cat(member_means, dim=1) if member_means else None,
        torch.cat(member_stds, dim=1) if member_stds else None,
    )


def concat_steps(parts: list[ModelStep]) -> ModelStep:
    return ModelStep(*_concat_outputs(parts))


def _concat_outputs(
    parts: list[Prediction] | list[ModelStep],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    return (
        torch.cat([p.next_observations for p in parts]),
        torch.cat([p.rewards for p in parts]),
        torch.cat([p.terminals for p in parts]),
        {name: torch.cat([p.uncertainty[name] for p in parts]) for name in parts[0].uncertainty},
    )
