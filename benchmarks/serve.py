"""Throughput and latency of `mbrl dynamics serve` under concurrent clients (not a test).

Starts the server as its own process with the CLI (on 127.0.0.1 only; the load
never leaves the machine) and drives it from this process with threads, each a
:class:`dynamics.client.DynamicsClient` on its own keep-alive connection:
- one client alone (sequential latency);
- 8 concurrent clients x 200 predict requests, with batching off (max wait 0 ms:
  only requests already queued share a forward pass) and on (2 ms);
- 8 concurrent clients x 200 seeded step requests.
Each scenario reports requests/s, rows/s, p50/p99/mean latency, errors and the
server's requests per forward pass (from /v1/info). For reference, the
in-process ``DynamicsService.predict`` time for one request's rows.

``--baseline DIR`` also serves the same model from another source tree (e.g. an
earlier commit: ``git archive <commit> | tar -x -C DIR``) and runs every scenario
on both servers alternately, so that a machine loaded by other work weighs on both alike.

The model is the default ensemble architecture (7 members, 4 x 200) trained
for 2 epochs on the embedded InvertedPendulum dataset in a temporary store
(serving cost does not depend on how well it fits), unless --key is given.

    python benchmarks/serve.py [--key KEY --store DIR] [--clients 8 --requests 200 --rows 4] [--baseline DIR]

Writes benchmarks/results/serve.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# benchmarks/dynamics.py would shadow the `dynamics` package: drop this folder from the import path
sys.path = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np
import torch

from dynamics.client import DynamicsClient
from dynamics.service import DynamicsService

RESULTS = Path(__file__).resolve().parent / "results" / "serve.json"
SOURCE = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"


def train_benchmark_model(folder: Path) -> tuple[str, str]:
    """(key, store) of a default-architecture ensemble briefly trained on the embedded dataset."""
    os.environ["MINARI_DATASETS_PATH"] = str(folder / "minari")
    from mbrl_core.data import load_dataset
    from workflows.embedded import build_noisy_inverted_pendulum

    data = load_dataset(build_noisy_inverted_pendulum("bench/invertedpendulum/noisy-v0", transitions=5_000, seed=0))
    store = str(folder / "store")
    return DynamicsService.fit(data, {"max_epochs": 2}, store=store, progress=False).key, store


class ServerProcess:
    """`mbrl dynamics serve` of the source tree ``source`` on a free loopback port, stopped with SIGTERM."""

    def __init__(self, source: Path, key: str, store: str, max_wait_ms: float) -> None:
        command = [
            sys.executable,
            "-m",
            "workflows.cli",
            "dynamics",
            "serve",
            key,
            "--store",
            store,
            "--host",
            LOOPBACK,
            "--port",
            "0",
            "--device",
            "cpu",
            "--max-wait-ms",
            str(max_wait_ms),
            "--log-level",
            "warning",
        ]
        environment = {**os.environ, "PYTHONPATH": str(source), "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=source, env=environment)
        line = self.process.stdout.readline()
        if " at " not in line:
            self.process.kill()
            raise RuntimeError(f"server did not start: {line!r}")
        self.url = line.rsplit(" at ", 1)[1].strip()

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far (Linux): a cost per request that the
        machine's other load does not inflate the way it inflates wall-clock latency."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        self.process.communicate(timeout=60)
        return self.process.returncode


def drive(
    url: str, kind: str, clients: int, requests_each: int, rows: int, inputs: tuple[torch.Tensor, torch.Tensor]
) -> dict:
    """``clients`` threads each sending ``requests_each`` requests of ``rows`` rows; latencies and errors."""
    observations, actions = inputs
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    barrier = threading.Barrier(clients + 1)

    def client_loop(index: int) -> None:
        generator = torch.Generator().manual_seed(index)
        with DynamicsClient(url) as client:
            client.health()  # open the connection before the clock starts
            barrier.wait()
            for _ in range(requests_each):
                start = torch.randint(0, len(observations) - rows, (1,), generator=generator).item()
                obs, act = observations[start : start + rows], actions[start : start + rows]
                began = time.perf_counter()
                try:
                    client.predict(obs, act) if kind == "predict" else client.step(obs, act, generator)
                except Exception:
                    errors[index] += 1
                latencies[index].append(time.perf_counter() - began)

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    all_latencies = np.array([value for per_client in latencies for value in per_client]) * 1000
    total = clients * requests_each
    return {
        "kind": kind,
        "clients": clients,
        "requests_per_client": requests_each,
        "rows_per_request": rows,
        "requests": total,
        "errors": sum(errors),
        "seconds": round(seconds, 3),
        "requests_per_second": round(total / seconds, 1),
        "rows_per_second": round(total * rows / seconds, 1),
        "latency_ms": {
            name: round(float(value), 3)
            for name, value in (
                ("p50", np.percentile(all_latencies, 50)),
                ("p99", np.percentile(all_latencies, 99)),
                ("mean", all_latencies.mean()),
            )
        },
    }


def scenario(
    source: Path,
    key: str,
    store: str,
    max_wait_ms: float,
    kind: str,
    clients: int,
    requests_each: int,
    rows: int,
    inputs,
) -> dict:
    server = ServerProcess(source, key, store, max_wait_ms)
    try:
        drive(server.url, kind, clients, 20, rows, inputs)  # warm-up
        with DynamicsClient(server.url) as client:
            before = client.info()["stats"]
        cpu_before = server.cpu_seconds()
        result = drive(server.url, kind, clients, requests_each, rows, inputs)
        cpu_seconds = server.cpu_seconds() - cpu_before
        with DynamicsClient(server.url) as client:
            after = client.info()["stats"]
    finally:
        exit_code = server.stop()
    answered = after["requests_answered"] - before["requests_answered"]
    passes = after["forward_passes"] - before["forward_passes"]
    result.update(
        max_wait_ms=max_wait_ms,
        requests_per_forward_pass=round(answered / max(passes, 1), 2),
        server_cpu_ms_per_request=round(1000 * cpu_seconds / result["requests"], 3),
        # CPUs' worth of time the server got: on a machine shared with other work, a server with more
        # runnable threads gets a larger share of the CPUs, which shows in its wall-clock figures
        server_cpu_share=round(cpu_seconds / result["seconds"], 2),
        server_exit_code=exit_code,
    )
    print(
        f"{source.name:>10s} {kind:7s} clients={clients} wait={max_wait_ms}ms: {result['requests_per_second']} req/s, "
        f"p50 {result['latency_ms']['p50']} ms, p99 {result['latency_ms']['p99']} ms, "
        f"{result['requests_per_forward_pass']} req/forward, server CPU {result['server_cpu_ms_per_request']} ms/req "
        f"(share {result['server_cpu_share']}), "
        f"errors {result['errors']}",
        flush=True,
    )
    return result


def in_process_ms(service: DynamicsService, inputs, rows: int, repeats: int = 500) -> float:
    observations, actions = inputs[0][:rows], inputs[1][:rows]
    for _ in range(20):
        service.predict(observations, actions)
    started = time.perf_counter()
    for _ in range(repeats):
        service.predict(observations, actions)
    return round(1000 * (time.perf_counter() - started) / repeats, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--key", default=None, help="a stored model to serve (default: train a benchmark model in a temp store)"
    )
    parser.add_argument("--store", default=None)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200, help="requests per client")
    parser.add_argument("--rows", type=int, default=4, help="rows per request")
    parser.add_argument(
        "--baseline", default=None, help="another source tree whose server runs every scenario too, alternately"
    )
    parser.add_argument("--rounds", type=int, default=1, help="times every scenario is run (per server)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        key, store = (args.key, args.store) if args.key else train_benchmark_model(Path(folder))
        service = DynamicsService.load(key, store=store)
        generator = torch.Generator().manual_seed(0)
        obs_dim, act_dim = service.meta["obs_dim"], service.meta["act_dim"]
        inputs = (
            torch.randn(10_000, obs_dim, generator=generator) * 0.1,
            torch.rand(10_000, act_dim, generator=generator) * 2 - 1,
        )
        settings = [  # (max_wait_ms, kind, clients, requests per client)
            (2.0, "predict", 1, args.requests * 2),
            (0.0, "predict", args.clients, args.requests),
            (2.0, "predict", args.clients, args.requests),
            (2.0, "step", args.clients, args.requests),
        ]
        sources = {"this": SOURCE, **({"baseline": Path(args.baseline).resolve()} if args.baseline else {})}
        runs: dict[str, list[dict]] = {name: [] for name in sources}
        for round_index in range(args.rounds):
            for max_wait_ms, kind, clients, requests_each in settings:
                for name, source in sources.items():  # alternately, so that the machine's load weighs on both
                    result = scenario(source, key, store, max_wait_ms, kind, clients, requests_each, args.rows, inputs)
                    runs[name].append({"round": round_index, **result})
        config = service.config
        results = {
            "command": " ".join(["python", "benchmarks/serve.py", *sys.argv[1:]]),
            "machine": {
                "cpus": os.cpu_count(),
                "load_average_at_start": [round(x, 2) for x in load_at_start],
                "python": platform.python_version(),
                "torch": torch.__version__,
            },
            "model": {
                "key": key,
                "dataset": service.meta["dataset"]["id"],
                "obs_dim": obs_dim,
                "act_dim": act_dim,
                "ensemble_size": config.ensemble_size,
                "hidden": [config.hidden_dim] * config.hidden_layers,
            },
            "server": (
                "FastAPI + uvicorn (httptools, uvloop), --torch-threads 1, separate process; clients: threads of "
                "this process"
            ),
            "in_process_predict_ms_per_request": in_process_ms(service, inputs, args.rows),
            "scenarios": runs["this"],
        }
        if args.baseline:
            results["baseline"] = {"source": str(sources["baseline"]), "scenarios": runs["baseline"]}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
