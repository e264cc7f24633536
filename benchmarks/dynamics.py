"""Dynamics-ensemble throughput benchmark (not a test).

Measures, with the default ensemble (7 members, 4 x 200 swish) on Hopper-sized
data (obs 11, act 3), at 1 and 2 torch threads:
- the machine's float32 matmul FLOP rate (square torch.mm, best of several runs);
- inference samples/s at batch 50,000 through all members (the service's
  chunked forward), its analytic FLOPs and the FLOP efficiency
  = FLOPs/sample x samples/s / matmul rate;
- training samples/s of the bare optimisation step (forward, backward, Adam;
  a sample = one transition seen by every member; FLOPs ~ 3x forward);
- the same two rates under bf16 autocast (precision "bf16"), measured alternately
  with float32 so a drifting machine moves both, and their ratio;
and, at 2 threads (``--fit-threads``), the wall clock of a full Lightning training
to early stop on a 100k-transition SYNTHETIC Hopper-sized dataset (a random smooth
nonlinear system, not MuJoCo data), per precision. On a loaded machine, ``--fit-epochs N``
times N epochs instead of the whole fit. Every figure is written with the load average.

    python benchmarks/dynamics.py [--skip-fit] [--fit-epochs N] [--fit-threads T] [--precisions 32 bf16]

Writes benchmarks/results/dynamics.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# this file is named like the `dynamics` package: drop its own folder from the import path
sys.path = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]

import gymnasium as gym
import numpy as np
import torch

from dynamics import service as service_module
from dynamics.config import make_dynamics_config
from dynamics.ensemble import gaussian_nll, precision_context
from dynamics.service import DynamicsService, _build_ensemble
from mbrl_core.data import DatasetInfo, TransitionData

OBS_DIM, ACT_DIM = 11, 3
INFERENCE_BATCH = 50_000


def best_time(function, repeats: int = 5) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_flops_per_second(size: int = 2048) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    return 2 * size**3 / best_time(lambda: torch.mm(a, b))


def inference_rate(chunk_rows: int, precision: str = "32") -> float:
    ensemble = _build_ensemble(make_dynamics_config(None), OBS_DIM, ACT_DIM, terminal_head=False).eval()
    inputs = torch.randn(INFERENCE_BATCH, OBS_DIM + ACT_DIM)

    def forward():
        with torch.no_grad(), precision_context(precision, inputs.device):
            for part in inputs.split(chunk_rows):
                ensemble(part)

    return INFERENCE_BATCH / best_time(forward, repeats=3)


def training_rate(steps: int = 30, precision: str = "32") -> float:
    config = make_dynamics_config(None)
    ensemble = _build_ensemble(config, OBS_DIM, ACT_DIM, terminal_head=False)
    optimizer = torch.optim.Adam(ensemble.parameters(), lr=config.learning_rate)
    inputs = torch.randn(config.ensemble_size, config.batch_size, OBS_DIM + ACT_DIM)
    targets = torch.randn(config.ensemble_size, config.batch_size, OBS_DIM + 1)

    def step_loop():
        for _ in range(steps):
            with precision_context(precision, inputs.device):
                out = ensemble(inputs)
            loss = (
                gaussian_nll(out.mean, out.logvar, targets).sum()
                + ensemble.logvar_bound_loss(0.01)
                + ensemble.weight_decay_loss()
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return steps * config.batch_size / best_time(step_loop, repeats=3)


def synthetic_hopper_data(transitions: int = 100_000, episode_length: int = 1000, seed: int = 0) -> TransitionData:
    """A smooth random nonlinear system with Hopper's dimensions (synthetic, not MuJoCo)."""
    rng = np.random.default_rng(seed)
    w_state = rng.standard_normal((OBS_DIM, OBS_DIM)) / np.sqrt(OBS_DIM)
    w_action = rng.standard_normal((ACT_DIM, OBS_DIM))
    episodes = transitions // episode_length
    observations = np.empty((episodes, episode_length + 1, OBS_DIM))
    actions = rng.uniform(-1, 1, (episodes, episode_length, ACT_DIM))
    observations[:, 0] = rng.standard_normal((episodes, OBS_DIM))
    for t in range(episode_length):
        drift = np.tanh(observations[:, t] @ w_state + actions[:, t] @ w_action) - 0.1 * observations[:, t]
        observations[:, t + 1] = observations[:, t] + 0.1 * drift + 0.01 * rng.standard_normal((episodes, OBS_DIM))
    rewards = observations[:, 1:, 0] - 0.1 * (actions**2).sum(-1)
    flat = lambda array: torch.as_tensor(array.reshape(-1, array.shape[-1]), dtype=torch.float32).contiguous()  # noqa: E731
    starts = torch.zeros(episodes, episode_length)
    starts[:, 0] = 1
    info = DatasetInfo(
        dataset_id="synthetic/hopper-sized-v0",
        observation_space=gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32),
        action_space=gym.spaces.Box(-1.0, 1.0, (ACT_DIM,), np.float32),
    )
    zeros = torch.zeros(episodes * episode_length)
    return TransitionData(
        flat(observations[:, :-1]),
        flat(actions),
        torch.as_tensor(rewards.reshape(-1), dtype=torch.float32),
        flat(observations[:, 1:]),
        zeros,
        zeros.clone(),
        starts.reshape(-1),
        info,
    )


def load_average() -> float:
    return os.getloadavg()[0]


def fit_to_early_stop(precision: str, max_epochs: int | None) -> dict:
    """The whole fit (``max_epochs`` None) or its first ``max_epochs`` epochs."""
    data = synthetic_hopper_data()
    settings = {"termination": "never", "precision": precision, **({"max_epochs": max_epochs} if max_epochs else {})}
    load_before = load_average()
    with tempfile.TemporaryDirectory() as store:
        service = DynamicsService.fit(data, settings, store=store, progress=False, accelerator="cpu")
    metrics = service.metrics
    epochs = metrics["epochs"]  # epochs run (Lightning's current_epoch after the fit; the old "+ 1" over-counted)
    return {
        "dataset": "synthetic Hopper-sized (obs 11, act 3), 100k transitions, 100 episodes of 1000 steps",
        "precision": precision,
        "threads": torch.get_num_threads(),
        "load_average_before_after": [load_before, load_average()],
        "wall_clock_seconds": metrics["train_seconds"],
        "epochs": epochs,
        "whole_fit": max_epochs is None,
        "stopped_early": metrics["stopped_early"],
        "seconds_per_epoch": metrics["train_seconds"] / epochs,
        "lightning_train_samples_per_second": epochs * metrics["train_transitions"] / metrics["train_seconds"],
        "holdout_mse_elites": metrics["holdout_mse_elites"],
    }


def precision_rates(rounds: int = 2) -> dict:
    """float32 and bf16 training and inference rates, alternated ``rounds`` times; the best of each."""
    chunk = service_module.forward_chunk_rows(torch.device("cpu"))
    rates: dict[str, dict[str, list[float]]] = {p: {"train": [], "inference": []} for p in ("32", "bf16")}
    for _ in range(rounds):
        for precision in ("32", "bf16"):
            rates[precision]["train"].append(training_rate(precision=precision))
            rates[precision]["inference"].append(inference_rate(chunk, precision=precision))
    best = {p: {kind: max(values) for kind, values in kinds.items()} for p, kinds in rates.items()}
    return {
        "train_step_samples_per_second": {p: best[p]["train"] for p in best},
        "inference_samples_per_second": {p: best[p]["inference"] for p in best},
        "bf16_speedup_train": best["bf16"]["train"] / best["32"]["train"],
        "bf16_speedup_inference": best["bf16"]["inference"] / best["32"]["inference"],
        "load_average": load_average(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-fit", action="store_true", help="skip the training-to-early-stop run")
    parser.add_argument("--fit-epochs", type=int, default=None, help="time only this many epochs of the fit")
    parser.add_argument("--fit-threads", type=int, default=2, help="torch threads of the fit")
    parser.add_argument("--precisions", nargs="+", default=["32", "bf16"], help="precisions of the fit")
    parser.add_argument("--skip-rates", action="store_true", help="skip the per-thread rate measurements")
    args = parser.parse_args()
    flops_per_sample = _build_ensemble(
        make_dynamics_config(None), OBS_DIM, ACT_DIM, terminal_head=False
    ).flops_per_sample()
    results: dict[str, Any] = {
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "forward_flops_per_sample_all_members": flops_per_sample,
        "by_threads": {},
    }
    for threads in () if args.skip_rates else (1, 2):
        torch.set_num_threads(threads)
        matmul = matmul_flops_per_second()
        service_rows = service_module.forward_chunk_rows(torch.device("cpu"))
        chunks = {rows: inference_rate(rows) for rows in sorted({512, 1024, 2048, service_rows, INFERENCE_BATCH})}
        train = training_rate()
        results["by_threads"][str(threads)] = {
            "matmul_gflops": matmul / 1e9,
            "inference_samples_per_second_by_chunk_rows": chunks,
            "service_chunk_rows": service_rows,
            "inference_samples_per_second": chunks[service_rows],
            "inference_flop_efficiency": flops_per_sample * chunks[service_rows] / matmul,
            "best_inference_flop_efficiency": flops_per_sample * max(chunks.values()) / matmul,
            "train_step_samples_per_second": train,
            "train_step_flop_efficiency": 3 * flops_per_sample * train / matmul,
            "precision": precision_rates(),
            "load_average": load_average(),
        }
        print(threads, json.dumps(results["by_threads"][str(threads)], indent=1))
    if args.skip_rates:
        del results["by_threads"]
    if not args.skip_fit:
        torch.set_num_threads(args.fit_threads)
        results["fit_to_early_stop"] = {p: fit_to_early_stop(p, args.fit_epochs) for p in args.precisions}
        print(json.dumps(results["fit_to_early_stop"], indent=1))
    out = Path(__file__).parent / "results" / "dynamics.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.exists() else {}
    out.write_text(json.dumps({**previous, **results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
