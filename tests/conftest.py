"""Shared fixtures: an isolated Minari root and small datasets built offline."""

from __future__ import annotations

import logging
import os

import pytest
import torch

torch.set_num_threads(1)
# Remote dataset look-ups fail at once instead of retrying a network that tests must not need.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def minari_root(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("minari")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    return str(root)


@pytest.fixture(scope="session")
def small_dataset_id(minari_root) -> str:
    """The embedded InvertedPendulum dataset at 5,000 transitions."""
    from workflows.embedded import build_noisy_inverted_pendulum

    return build_noisy_inverted_pendulum("test/invertedpendulum/noisy-v0", transitions=5_000, seed=0)


@pytest.fixture(scope="session")
def small_data(small_dataset_id):
    from mbrl_core.data import load_dataset

    return load_dataset(small_dataset_id)


# A small ensemble that trains in seconds on the 5,000-transition InvertedPendulum data.
TINY_DYNAMICS = {
    "ensemble_size": 4,
    "elites": 3,
    "hidden_dim": 64,
    "hidden_layers": 2,
    "weight_decays": [2.5e-5, 5.0e-5, 1.0e-4],
    "max_epochs": 15,
    "patience": 3,
}


@pytest.fixture(scope="session")
def dynamics_store(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("dynamics-store"))


@pytest.fixture(scope="session")
def tiny_model(small_data, dynamics_store):
    """One tiny dynamics model per test session, shared by the rollout and model-based tests."""
    from dynamics.service import DynamicsService

    return DynamicsService.fit(small_data, TINY_DYNAMICS, store=dynamics_store, progress=False)


# ---------------------------------------------------------------- an S3-compatible server on loopback

S3_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,  # no profile of the machine's user is read
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "NO_PROXY": "127.0.0.1",
}


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 server (moto's server mode) on 127.0.0.1 for the whole session; every client (s3fs in this
    process and in the CLI subprocesses) reaches it through AWS_ENDPOINT_URL and fake credentials."""
    moto_server = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request in failure reports
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {name: os.environ.get(name) for name in [*S3_ENVIRONMENT, "AWS_ENDPOINT_URL", "AWS_PROFILE"]}
    os.environ.update(S3_ENVIRONMENT | {"AWS_ENDPOINT_URL": endpoint})
    os.environ.pop("AWS_PROFILE", None)
    yield endpoint
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint) -> str:
    """A fresh empty bucket, as an ``s3://`` URL."""
    import uuid

    import s3fs

    name = f"test-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(endpoint_url=s3_endpoint).mkdir(name)
    return f"s3://{name}"
