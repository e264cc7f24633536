"""The dynamics server fuzzed by schemathesis from its own OpenAPI schema: whatever arrives, no 5xx, and
every answer matches the schema (status, content type, body)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from dynamics.service import DynamicsService
from dynamics.serving.config import ServeConfig
from dynamics.serving.server import DynamicsServer

TINY = {
    "ensemble_size": 2,
    "elites": 1,
    "hidden_dim": 16,
    "hidden_layers": 1,
    "weight_decays": [1e-5, 1e-5],
    "max_epochs": 1,
}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzzed_server(small_data, tmp_path_factory):
    service = DynamicsService.fit(small_data, TINY, store=str(tmp_path_factory.mktemp("fuzz-store")), progress=False)
    server = DynamicsServer(service, ServeConfig(host="127.0.0.1", port=0, max_request_rows=16, max_wait_ms=0.5))
    yield server.start()
    server.stop()


@pytest.fixture
def served_schema(fuzzed_server):
    return schemathesis.openapi.from_url(fuzzed_server.url + "/openapi.json", timeout=30)


schema = schemathesis.pytest.from_fixture("served_schema")


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_input_makes_a_server_error(case):
    case.call_and_validate(checks=CHECKS, timeout=30)
