"""The dynamics HTTP server: answers equal the in-process service, every bad input is a 4xx the server
survives, tokens, idle and slow connections, concurrent clients batched into shared forward passes,
graceful shutdown, the CLI (with and without the serve extra)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
import torch

from dynamics.client import DynamicsClient, RemoteError
from dynamics.rollouts import branched_rollouts
from dynamics.service import DynamicsService
from dynamics.serving.config import ServeConfig, check_bind_allowed
from dynamics.serving.server import DynamicsServer
from mbrl_core.contracts import UNCERTAINTY_FEATURES
from mbrl_core.errors import ConfigError, MbrlError
from workflows.cli import main
from workflows.commands.dynamics_serve import read_token

TINY = {
    "ensemble_size": 3,
    "elites": 2,
    "hidden_dim": 32,
    "hidden_layers": 2,
    "weight_decays": [1e-5, 1e-5, 1e-5],
    "max_epochs": 3,
    "patience": 2,
}
MAX_ROWS = 64
LOOPBACK = "127.0.0.1"
JSON = "application/json"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("dynamics-store"))


@pytest.fixture(scope="module")
def service(small_data, store) -> DynamicsService:
    return DynamicsService.fit(small_data, TINY, store=store, progress=False)


@pytest.fixture(scope="module")
def server(service):
    server = DynamicsServer(
        service, ServeConfig(host=LOOPBACK, port=0, max_request_rows=MAX_ROWS, max_wait_ms=1.0)
    ).start()
    yield server
    server.stop()


@pytest.fixture
def client(server):
    with DynamicsClient(server.url) as client:
        yield client


def post(url: str, payload, content_type: str = "application/json", headers: dict | None = None) -> tuple[int, dict]:
    """A raw urllib POST: (status, decoded JSON body) for success and HTTP errors alike."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": content_type, **(headers or {})}, method="POST"
    )
    return _open(request)


def get(url: str, headers: dict | None = None) -> tuple[int, dict]:
    return _open(urllib.request.Request(url, headers=headers or {}))


def _open(request) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def rows(data, count: int, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return data.observations[start : start + count], data.actions[start : start + count]


# ---------------------------------------------------------------------- equal to the in-process service


def test_client_predictions_equal_the_in_process_ones(client, service, small_data):
    obs, act = rows(small_data, 50)
    local, remote = service.predict(obs, act, per_member=True), client.predict(obs, act, per_member=True)
    for field in ("next_observations", "rewards", "terminals", "member_means", "member_stds"):
        assert torch.equal(getattr(local, field), getattr(remote, field)), field
    assert set(remote.uncertainty) == set(UNCERTAINTY_FEATURES)
    for name in UNCERTAINTY_FEATURES:
        assert torch.equal(local.uncertainty[name], remote.uncertainty[name]), name
    assert client.predict(obs, act).member_means is None


def test_client_steps_equal_the_in_process_ones_for_the_same_seed(client, service, small_data):
    obs, act = rows(small_data, 40)
    local = service.step(obs, act, torch.Generator().manual_seed(11))
    remote = client.step(obs, act, seed=11)
    for field in ("next_observations", "rewards", "terminals"):
        assert torch.equal(getattr(local, field), getattr(remote, field)), field
    for name in UNCERTAINTY_FEATURES:
        assert torch.equal(local.uncertainty[name], remote.uncertainty[name])
    # a learner's generator: the client draws the seed from it, so equal generators give equal steps
    first = client.step(obs, act, torch.Generator().manual_seed(5))
    again = client.step(obs, act, torch.Generator().manual_seed(5))
    other = client.step(obs, act, torch.Generator().manual_seed(6))
    assert torch.equal(first.next_observations, again.next_observations)
    assert not torch.equal(first.next_observations, other.next_observations)


def test_raw_http_predictions_equal_the_in_process_ones(server, service, small_data):
    obs, act = rows(small_data, 20, start=100)
    status, answer = post(server.url + "/v1/predict", {"observations": obs.tolist(), "actions": act.tolist()})
    assert status == 200 and "member_means" not in answer
    local = service.predict(obs, act)
    assert torch.equal(torch.tensor(answer["next_observations"]), local.next_observations)
    assert torch.equal(torch.tensor(answer["rewards"]), local.rewards)
    assert torch.equal(torch.tensor(answer["terminals"]), local.terminals)
    status, answer = post(server.url + "/v1/step", {"observations": obs.tolist(), "actions": act.tolist(), "seed": 3})
    assert status == 200
    assert torch.equal(
        torch.tensor(answer["next_observations"]),
        service.step(obs, act, torch.Generator().manual_seed(3)).next_observations,
    )


def test_client_splits_more_rows_than_the_server_takes(client, service, small_data):
    obs, act = rows(small_data, 2 * MAX_ROWS + 10)
    local, remote = service.predict(obs, act, per_member=True), client.predict(obs, act, per_member=True)
    for field in ("next_observations", "rewards", "member_means", "member_stds"):
        assert torch.allclose(getattr(local, field), getattr(remote, field), atol=1e-6), field
    first, again = (client.step(obs, act, torch.Generator().manual_seed(2)) for _ in range(2))
    assert first.next_observations.shape == (2 * MAX_ROWS + 10, 4) and torch.equal(
        first.next_observations, again.next_observations
    )
    with pytest.raises(MbrlError, match=f"explicit seed must fit one request \\({MAX_ROWS} rows\\)"):
        client.step(obs, act, seed=1)


def test_client_drives_branched_rollouts_like_the_service(client, small_data):
    def act(observations: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(observations), 1)

    starts = small_data.observations[:100]
    first = branched_rollouts(client, act, starts, 3, torch.Generator().manual_seed(0))
    again = branched_rollouts(client, act, starts, 3, torch.Generator().manual_seed(0))
    assert torch.equal(first["next_observations"], again["next_observations"])
    assert len(first["rewards"]) >= 100 and set(first["uncertainty"]) == set(UNCERTAINTY_FEATURES)


def test_info_and_health(server, service, client):
    status, info = get(server.url + "/v1/info")
    assert status == 200 and info["key"] == service.key and info["elites"] == service.elites
    assert info["metrics"] == json.loads(json.dumps(service.metrics)) and info["limits"]["max_request_rows"] == MAX_ROWS
    assert info["uncertainty_features"] == list(UNCERTAINTY_FEATURES) and info["obs_dim"] == 4 and info["act_dim"] == 1
    # InvertedPendulum's observation space is unbounded: JSON has no infinity, so the bounds are null
    assert info["spaces"]["observation"]["low"] == [None] * 4 and info["spaces"]["action"]["high"] == [3.0]
    assert client.key == service.key and client.elites == service.elites
    assert get(server.url + "/health") == (200, {"status": "ok"})


# ---------------------------------------------------------------------- refusals


def _valid(data, count: int = 2) -> dict:
    obs, act = rows(data, count)
    return {"observations": obs.tolist(), "actions": act.tolist()}


BAD_REQUESTS = [
    # (name, path, body builder(data) -> bytes or JSON-able, content type, status, reason pattern)
    ("bad json", "/v1/predict", lambda d: b'{"observations": [[0, 0', JSON, 400, "not valid JSON"),
    ("deep nesting", "/v1/predict", lambda d: b'{"observations": ' + b"[" * 100_000, JSON, 400, "recursion limit"),
    ("deep nesting, closed", "/v1/step", lambda d: b"[" * 5_000 + b"]" * 5_000, JSON, 400, "recursion limit"),
    ("not an object", "/v1/predict", lambda d: [1, 2], JSON, 400, "must be a JSON object, got list"),
    ("not utf-8", "/v1/predict", lambda d: b"\xff\xfe", JSON, 400, "not valid JSON"),
    (
        "wrong content type",
        "/v1/predict",
        lambda d: _valid(d),
        "text/plain",
        415,
        "Content-Type must be application/json",
    ),
    ("missing actions", "/v1/predict", lambda d: {"observations": [[0.0] * 4]}, JSON, 400, "missing field 'actions'"),
    (
        "wrong obs width",
        "/v1/predict",
        lambda d: {**_valid(d), "observations": [[0.0] * 3] * 2},
        JSON,
        400,
        r"observations must have shape \[rows, 4\]: row 0 has 3 numbers",
    ),
    (
        "one-dimensional",
        "/v1/predict",
        lambda d: {**_valid(d, 1), "observations": [0.0] * 4},
        JSON,
        400,
        r"shape \[rows, 4\]: row 0 is 0.0, not a list",
    ),
    ("three-dimensional", "/v1/predict", lambda d: {**_valid(d, 1), "actions": [[[0.0]]]}, JSON, 400, "numbers only"),
    (
        "ragged rows",
        "/v1/predict",
        lambda d: {**_valid(d), "observations": [[0.0] * 4, [0.0] * 3]},
        JSON,
        400,
        "row 1 has 3 numbers",
    ),
    ("strings", "/v1/predict", lambda d: {**_valid(d, 1), "actions": [["0.5"]]}, JSON, 400, "numbers only"),
    ("booleans", "/v1/predict", lambda d: {**_valid(d, 1), "actions": [[True]]}, JSON, 400, "numbers only"),
    (
        "nan",
        "/v1/predict",
        lambda d: b'{"observations": [[0,0,0,0],[0,NaN,0,0]], "actions": [[0],[0]]}',
        JSON,
        400,
        "observations row 1 contains NaN or infinity",
    ),
    (
        "infinity",
        "/v1/step",
        lambda d: {**_valid(d), "actions": [[0.0], [1e999]], "seed": 0},
        JSON,
        400,
        "actions row 1 contains NaN or infinity",
    ),
    (
        "beyond float32",
        "/v1/predict",
        lambda d: {**_valid(d, 1), "actions": [[-1e39]]},
        JSON,
        400,
        "actions row 0 holds -1e[+]39, beyond float32's range",
    ),
    (
        "row counts differ",
        "/v1/predict",
        lambda d: {**_valid(d, 3), "actions": [[0.0]]},
        JSON,
        400,
        "3 rows but actions has 1",
    ),
    ("empty", "/v1/predict", lambda d: {"observations": [], "actions": []}, JSON, 400, "non-empty list"),
    ("rows not a list", "/v1/predict", lambda d: {**_valid(d), "actions": {"a": 1}}, JSON, 400, "non-empty list"),
    ("too many rows", "/v1/predict", lambda d: _valid(d, MAX_ROWS + 1), JSON, 413, f"limit of {MAX_ROWS}"),
    ("unknown field", "/v1/predict", lambda d: {**_valid(d), "seed": 1}, JSON, 400, "unknown field.*seed"),
    ("per_member not bool", "/v1/predict", lambda d: {**_valid(d), "per_member": "yes"}, JSON, 400, "per_member"),
    ("step without seed", "/v1/step", lambda d: _valid(d), JSON, 400, "missing field 'seed'"),
    ("negative seed", "/v1/step", lambda d: {**_valid(d), "seed": -1}, JSON, 400, "seed must be an integer"),
    ("float seed", "/v1/step", lambda d: {**_valid(d), "seed": 1.5}, JSON, 400, "seed must be an integer"),
    ("bool seed", "/v1/step", lambda d: {**_valid(d), "seed": True}, JSON, 400, "seed must be an integer"),
    ("seed beyond 2**64", "/v1/step", lambda d: {**_valid(d), "seed": 2**64}, JSON, 400, "seed must be an integer"),
    ("unknown path", "/v1/nope", lambda d: _valid(d), JSON, 404, "no endpoint /v1/nope"),
    ("wrong method", "/health", lambda d: _valid(d), JSON, 405, "/health takes GET, not POST"),
]


@pytest.mark.parametrize(
    "name, path, build, content_type, status, reason", BAD_REQUESTS, ids=[case[0] for case in BAD_REQUESTS]
)
def test_every_bad_request_is_a_4xx_and_the_server_keeps_answering(
    server, client, small_data, name, path, build, content_type, status, reason
):
    got, answer = post(server.url + path, build(small_data), content_type)
    assert got == status and list(answer) == ["error"]
    assert "\n" not in answer["error"]
    assert re.search(reason, answer["error"]), answer["error"]
    assert client.predict(*rows(small_data, 3)).next_observations.shape == (3, 4)


def test_the_largest_seed_is_taken(server, service, small_data):
    obs, act = rows(small_data, 2)
    status, answer = post(server.url + "/v1/step", {**_valid(small_data), "seed": 2**64 - 1})
    assert status == 200
    local = service.step(obs, act, torch.Generator().manual_seed(2**64 - 1))
    assert torch.equal(torch.tensor(answer["next_observations"]), local.next_observations)


def test_transport_refusals_are_4xx_too(server, client, small_data):
    port = server.port
    assert get(server.url + "/v1/predict")[0] == 405
    # a body announced larger than the limit is refused before it is read
    announced = (
        b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 999999999\r\n\r\n{}"
    )
    assert _raw(port, announced).startswith(b"HTTP/1.1 413")
    # a chunked body is read chunk by chunk, and refused once it outgrows the limit
    valid = json.dumps(_valid(small_data)).encode()
    assert _raw(port, _chunked([valid[:10], valid[10:]])).startswith(b"HTTP/1.1 200")
    limit = client.info()["limits"]["max_body_bytes"]
    assert _raw(port, _chunked([b" " * (1 << 20)] * (limit // (1 << 20) + 1))).startswith(b"HTTP/1.1 413")
    assert _raw(port, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400")
    # the client turns a refusal into one clear error
    with pytest.raises(RemoteError, match="404 no endpoint /v2/predict") as error:
        client._request("POST", "/v2/predict", {})
    assert error.value.status == 404
    assert client.health() == {"status": "ok"}


def _chunked(chunks: list[bytes]) -> bytes:
    head = (
        b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    return head + b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) + b"0\r\n\r\n"


def _raw(port: int, data: bytes) -> bytes:
    with socket.create_connection((LOOPBACK, port), timeout=10) as connection:
        connection.sendall(data)
        return connection.recv(65536)


def test_the_schema_and_its_docs_page_are_served(server):
    status, schema = get(server.url + "/openapi.json")
    assert status == 200 and set(schema["paths"]) == {"/health", "/v1/info", "/v1/predict", "/v1/step"}
    body = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    rows_schema = body["properties"]["observations"]
    assert rows_schema["maxItems"] == MAX_ROWS and rows_schema["items"]["minItems"] == 4
    with urllib.request.urlopen(server.url + "/docs", timeout=30) as page:
        assert page.status == 200 and b"/openapi.json" in page.read()


def test_token_is_required_except_for_health_and_the_scheme_is_case_insensitive(service, small_data):
    server = DynamicsServer(service, ServeConfig(host=LOOPBACK, port=0, token="s3cret")).start()
    try:
        assert get(server.url + "/health")[0] == 200
        assert get(server.url + "/v1/info") == (
            401,
            {"error": "missing or wrong bearer token (send 'Authorization: Bearer <token>')"},
        )
        for refused in ("Bearer wrong", "Basic s3cret", "s3cret", "Bearer", "Bearer s3cret2", "Bearer é"):
            assert get(server.url + "/v1/info", {"Authorization": refused})[0] == 401, refused
        for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
            headers = {"Authorization": f"{scheme} s3cret"}
            assert post(server.url + "/v1/predict", _valid(small_data), headers=headers)[0] == 200, scheme
        with pytest.raises(RemoteError, match="401 missing or wrong bearer token"):
            DynamicsClient(server.url).predict(*rows(small_data, 2))
        assert DynamicsClient(server.url, token="s3cret").predict(*rows(small_data, 2)).rewards.shape == (2,)
        request = urllib.request.Request(server.url + "/v1/info")
        with pytest.raises(urllib.error.HTTPError) as refusal:
            urllib.request.urlopen(request, timeout=30)
        assert refusal.value.headers["WWW-Authenticate"] == "Bearer"
    finally:
        server.stop()


def test_non_loopback_host_needs_a_token():
    for host in ("0.0.0.0", "::", "192.168.1.7", "example.com"):
        with pytest.raises(ConfigError, match=f"refusing to serve on non-loopback host '{host}' without a token"):
            check_bind_allowed(ServeConfig(host=host))
    check_bind_allowed(ServeConfig(host="0.0.0.0", token="t"))
    for loopback in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        check_bind_allowed(ServeConfig(host=loopback))


def test_settings_are_checked_where_they_are_built():
    for port in (-1, 65536, 70000):
        with pytest.raises(ConfigError, match=f"--port must be in 0..65535 .*got {port}"):
            ServeConfig(port=port)
    with pytest.raises(ConfigError, match="token is empty"):
        ServeConfig(token=" ")
    with pytest.raises(ConfigError, match="max_request_rows must be >= 1"):
        ServeConfig(max_request_rows=0)
    with pytest.raises(ConfigError, match="max_wait_ms must be >= 0"):
        ServeConfig(max_wait_ms=float("nan"))


def test_a_taken_port_is_one_line(service):
    with socket.create_server((LOOPBACK, 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot bind {LOOPBACK}:{port}: "):
            DynamicsServer(service, ServeConfig(host=LOOPBACK, port=port))


def test_token_comes_from_a_file_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MBRL_SERVE_TOKEN", "from-env")
    (tmp_path / "token").write_text("from-file\n")
    assert read_token(str(tmp_path / "token")) == "from-file" and read_token(None) == "from-env"
    with pytest.raises(ConfigError, match="cannot read --token-file"):
        read_token(str(tmp_path / "missing"))


# ---------------------------------------------------------------------- load and shutdown


def serve_clients(server, clients: int, work) -> dict[int, list]:
    """Runs ``work(client, index)`` from ``clients`` threads at once, each client on its own connection,
    then stops the server; the answers by thread index."""
    answers: dict[int, list] = {}

    def run(index: int) -> None:
        with DynamicsClient(server.url) as client:
            answers[index] = work(client, index)

    try:
        threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        server.stop()
    return answers


def test_concurrent_clients_complete_and_share_forward_passes(service, small_data):
    clients, requests_each = 8, 200
    server = DynamicsServer(service, ServeConfig(host=LOOPBACK, port=0, max_wait_ms=5.0)).start()

    def work(client, index: int) -> list:
        obs, act = rows(small_data, 4, start=4 * index)
        return [client.predict(obs, act).next_observations for _ in range(requests_each)]

    answers = serve_clients(server, clients, work)
    assert len(answers) == clients and all(len(a) == requests_each for a in answers.values())
    for index, results in answers.items():
        # rows answered inside a larger batch match the in-process answer up to matmul rounding
        expected = service.predict(*rows(small_data, 4, start=4 * index)).next_observations
        assert all(torch.allclose(result, expected, atol=1e-5) for result in results)
    assert server.worker.forward_passes < clients * requests_each


def test_concurrent_seeded_steps_share_forward_passes_and_each_keeps_its_own_seed(service, small_data):
    clients, requests_each = 6, 15
    server = DynamicsServer(service, ServeConfig(host=LOOPBACK, port=0, max_wait_ms=20.0)).start()

    def request(index: int, repeat: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return (*rows(small_data, 3 + index, start=10 * index), 1000 * index + repeat)  # (obs, act, seed)

    def work(client, index: int) -> list:
        return [
            client.step(obs, act, seed=seed) for obs, act, seed in (request(index, r) for r in range(requests_each))
        ]

    answers = serve_clients(server, clients, work)
    assert len(answers) == clients and server.worker.forward_passes < clients * requests_each
    for index, results in answers.items():
        for repeat, remote in enumerate(results):
            obs, act, seed = request(index, repeat)
            local = service.step(obs, act, torch.Generator().manual_seed(seed))
            # the seed's draws exactly; the values up to the rounding BLAS varies with the batch's size
            # (a different elite or noise draw would be off by a predicted std, orders of magnitude more)
            for field in ("next_observations", "rewards"):
                assert torch.allclose(getattr(remote, field), getattr(local, field), rtol=0, atol=1e-5), field
            assert torch.equal(remote.terminals, local.terminals)
            for name in UNCERTAINTY_FEATURES:
                assert torch.allclose(remote.uncertainty[name], local.uncertainty[name], rtol=1e-5, atol=1e-6), name


class SlowService:
    """A service whose predictions take a while, to catch a request in flight."""

    def __init__(self, service, seconds: float) -> None:
        self.service, self.seconds, self.meta, self.device = service, seconds, service.meta, service.device
        self.key = service.key
        self.started = threading.Event()

    def predict(self, *args, **kwargs):
        self.started.set()
        time.sleep(self.seconds)
        return self.service.predict(*args, **kwargs)


class BrokenPredictions:
    """A service whose predictions fail unexpectedly; its steps work."""

    def __init__(self, service) -> None:
        self.key, self.meta, self.device, self.step_segments = (
            service.key,
            service.meta,
            service.device,
            service.step_segments,
        )

    def predict(self, *args, **kwargs):
        raise RuntimeError("the model broke")


def test_a_model_failure_is_a_500_in_one_line_and_the_server_keeps_serving(service, small_data):
    server = DynamicsServer(BrokenPredictions(service), ServeConfig(host=LOOPBACK, port=0)).start()
    try:
        assert post(server.url + "/v1/predict", _valid(small_data)) == (
            500,
            {"error": "internal error: RuntimeError: the model broke"},
        )
        status, answer = post(server.url + "/v1/step", {**_valid(small_data), "seed": 1})
        assert status == 200 and len(answer["rewards"]) == 2
    finally:
        server.stop()


def test_stop_finishes_in_flight_requests_and_closes_idle_connections(service, small_data):
    slow = SlowService(service, seconds=0.5)
    server = DynamicsServer(slow, ServeConfig(host=LOOPBACK, port=0)).start()
    idle = DynamicsClient(server.url)
    assert idle.health() == {"status": "ok"}  # leaves a kept-alive connection open
    answer = {}
    in_flight = threading.Thread(
        target=lambda: answer.update(result=post(server.url + "/v1/predict", _valid(small_data)))
    )
    in_flight.start()
    assert slow.started.wait(10)
    started = time.perf_counter()
    server.stop()
    in_flight.join()
    assert answer["result"][0] == 200 and len(answer["result"][1]["rewards"]) == 2
    assert time.perf_counter() - started < 5  # the idle connection did not hold the shutdown
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((LOOPBACK, server.port), timeout=5)


def test_idle_and_slowly_sending_connections_do_not_deny_service(service, small_data):
    server = DynamicsServer(service, ServeConfig(host=LOOPBACK, port=0, max_wait_ms=1.0)).start()
    partial_head = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Ty"
    partial_body = (
        b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    hoarders: list[socket.socket] = []
    try:
        for first_bytes in (b"", partial_head, partial_body):  # idle, slow headers, slow body
            for _ in range(40):
                connection = socket.create_connection((LOOPBACK, server.port), timeout=10)
                connection.sendall(first_bytes)
                hoarders.append(connection)
        with DynamicsClient(server.url, timeout=10) as client:
            for start in range(0, 40, 4):
                obs, act = rows(small_data, 4, start=start)
                assert torch.equal(client.predict(obs, act).rewards, service.predict(obs, act).rewards)
            for connection in hoarders[40:80]:  # the slow headers drip on; the service still answers
                connection.sendall(b"pe: application/json\r\n")
            assert client.health() == {"status": "ok"}
    finally:
        for connection in hoarders:
            connection.close()
        server.stop()


def test_idle_kept_alive_connections_are_closed_and_the_client_resends(service, small_data):
    server = DynamicsServer(service, ServeConfig(host=LOOPBACK, port=0, idle_timeout=1)).start()
    try:
        with socket.create_connection((LOOPBACK, server.port), timeout=10) as connection:
            connection.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert connection.recv(65536).startswith(b"HTTP/1.1 200")
            connection.settimeout(5)
            assert connection.recv(65536) == b""  # closed by the server after a second of silence
        client = DynamicsClient(server.url)
        assert client.health() == {"status": "ok"}  # keeps its connection...
        time.sleep(1.5)  # ...which the server closes; the client resends on a new one
        assert client.predict(*rows(small_data, 2)).rewards.shape == (2,)
    finally:
        server.stop()


# ---------------------------------------------------------------------- command line


def test_cli_serves_logs_each_request_and_exits_0_on_sigterm(service, store, small_data):
    command = [
        sys.executable,
        "-m",
        "workflows.cli",
        "dynamics",
        "serve",
        service.key[:8],
        "--store",
        store,
        "--port",
        "0",
        "--device",
        "cpu",
        "--log-level",
        "debug",
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    try:
        line = process.stdout.readline()
        assert line.startswith(f"serving dynamics model {service.key}"), line + process.stderr.read()
        url = line.split(" at ")[-1].strip()
        assert url.startswith(f"http://{LOOPBACK}:")
        obs, act = rows(small_data, 5)
        assert torch.equal(DynamicsClient(url).predict(obs, act).rewards, service.predict(obs, act).rewards)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)  # interpreter exit is slow on a loaded machine
    finally:
        process.kill() if process.poll() is None else None
    assert process.returncode == 0, stderr
    assert "server stopped" in stdout
    assert "POST /v1/predict 200 rows=5" in stderr


def test_cli_refuses_a_public_host_without_a_token_a_bad_port_and_a_taken_one(service, store, capsys, monkeypatch):
    monkeypatch.delenv("MBRL_SERVE_TOKEN", raising=False)
    serve = ["dynamics", "serve", service.key, "--store", store]
    assert main([*serve, "--host", "0.0.0.0"]) == 2
    assert "refusing to serve on non-loopback host" in capsys.readouterr().err
    assert main([*serve, "--port", "70000"]) == 2
    assert capsys.readouterr().err == "error: --port must be in 0..65535 (0 picks a free port), got 70000\n"
    assert main([*serve, "--torch-threads", "0"]) == 2
    assert capsys.readouterr().err == "error: --torch-threads must be >= 1, got 0\n"
    with socket.create_server((LOOPBACK, 0)) as taken:
        assert main([*serve, "--port", str(taken.getsockname()[1])]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: cannot bind") and error.count("\n") == 1


WITHOUT_THE_SERVE_EXTRA = """
import sys
for module in ("fastapi", "uvicorn", "starlette", "pydantic"):
    sys.modules[module] = None  # `import fastapi` now fails as if it were not installed
from workflows.cli import main
import dynamics.client, dynamics.serving.wire, dynamics.serving.config
print("list exit", main(["dynamics", "list", "--store", sys.argv[1]]))
sys.exit(main(["dynamics", "serve", "somekey", "--store", sys.argv[1]]))
"""


def test_without_the_serve_extra_the_project_works_and_serve_says_how_to_install_it(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_THE_SERVE_EXTRA, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert "list exit 0" in done.stdout
    assert done.stderr.count("\n") == 1 and 'pip install "mbrl-offline-suite[serve]"' in done.stderr
