"""Model-based throughput benchmark (not a test).

On a SYNTHETIC Hopper-sized dataset (obs 11, act 3, a random smooth nonlinear
system; not MuJoCo data) with the default dynamics ensemble architecture
(7 members, 4 x 200; trained only briefly, since quality does not change speed):

1. rollout generation, transitions/s, at the default batch (50,000 start states,
   horizon 5; divided by --scale) under a SAC policy: model + policy alone, the synchronous Zarr
   append alone, and both in sequence (the worst case; in training the append
   runs on the background writer);
2. trainer updates/s through the one OfflineTrainer, no evaluation: MOPO and MOReL
   vs SAC on the real data, and COMBO vs CQL, with the model-based runs refreshing
   rollouts at the default cadence (every 1,000 updates, 5 kept; with --scale s every
   1,000 / s updates from 50,000 / s start states, the same rollout work per update,
   so a loaded machine sees several refreshes in a short run) and writing them to
   Zarr (the writes, and the wait for the last one, are inside the timing). With
   ``rollouts.background`` (the default) generation k+1 is built on a worker thread
   while the learner updates; generation 0 is built synchronously before the first
   update, a one-time start-up cost like the dynamics fit, so it is timed apart
   ("first_generation_seconds") and the rate is that of the training loop after it.
   MOPO is also run with ``background: false`` (the synchronous refresh) for comparison.
   Target (issue 15): the model-based learner at >= 90% of its model-free twin's rate.

The machine is shared: every figure carries the 1-minute load average before and
after it (``os.getloadavg``), so a ratio between two runs taken at different loads
can be read for what it is.

    python benchmarks/model_based.py [--steps 3000] [--cql-steps 2000] [--threads 2] [--scale 1]

Writes benchmarks/results/model_based.json.
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

# this folder holds a dynamics.py benchmark that would shadow the `dynamics` package
sys.path = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]

import gymnasium as gym
import numpy as np
import torch

from dynamics.rollouts import RolloutGenerator
from dynamics.service import DynamicsService
from mbrl_core.config import build_config, resolve_algo_config
from mbrl_core.contracts import UNCERTAINTY_FEATURES
from mbrl_core.data import DatasetInfo, TransitionData
from mbrl_core.learner import LearnerContext
from mbrl_core.rollout_store import RolloutStore
from mbrl_core.sampler import RealSampler
from mbrl_core.trainer import OfflineTrainer, TrainerConfig
from policies.registry import get_learner
from workflows.model_based import prepare_model_based_run

OBS_DIM, ACT_DIM, TRANSITIONS = 11, 3, 30_000
# Default architecture; two epochs are enough for a speed measurement.
BENCH_DYNAMICS = {"max_epochs": 2, "patience": 2}
# (model-based, model-free twin, which --steps option sets their length)
PAIRS = (("mopo", "sac", "steps"), ("morel", "sac", "steps"), ("combo", "cql", "cql_steps"))


def synthetic_hopper_sized(transitions: int, seed: int = 0) -> TransitionData:
    """Episodes of 1,000 steps of s' = s + 0.05 tanh(A s + B a), r = 1 - |s|^2 / dim, never terminating."""
    g = torch.Generator().manual_seed(seed)
    a_matrix, b_matrix = (
        torch.randn(OBS_DIM, OBS_DIM, generator=g) / OBS_DIM**0.5,
        torch.randn(OBS_DIM, ACT_DIM, generator=g),
    )
    actions = torch.rand(transitions, ACT_DIM, generator=g) * 2 - 1
    observations = torch.zeros(transitions + 1, OBS_DIM)
    for t in range(transitions):
        state = torch.randn(OBS_DIM, generator=g) * 0.1 if t % 1000 == 0 else observations[t]
        observations[t] = state
        observations[t + 1] = state + 0.05 * torch.tanh(a_matrix @ state + b_matrix @ actions[t])
    next_observations = observations[1:].clone()
    starts = (torch.arange(transitions) % 1000 == 0).float()
    info = DatasetInfo(
        dataset_id="synthetic/hopper-sized-v0",
        observation_space=gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32),
        action_space=gym.spaces.Box(-1.0, 1.0, (ACT_DIM,), np.float32),
    )
    return TransitionData(
        observations=observations[:-1].contiguous(),
        actions=actions,
        rewards=1.0 - next_observations.pow(2).mean(1),
        next_observations=next_observations,
        terminals=torch.zeros(transitions),
        timeouts=torch.roll(starts, -1),
        episode_starts=starts,
        info=info,
    )


def make_learner(algo: str, data: TransitionData, steps: int, extras: dict | None = None):
    entry = get_learner(algo)
    config = resolve_algo_config(algo, data.info.dataset_id)
    context = LearnerContext.from_data(data, steps, data.device)
    context.extras.update(extras or {})
    return entry.learner_cls(build_config(entry.config_cls, config["learner"], f"{algo}.learner"), context), config


def rollout_rates(
    data: TransitionData, model: DynamicsService, folder: Path, batch_size: int, repeats: int = 3
) -> dict:
    learner, config = make_learner("mopo", data, 1000)
    rollouts = {**config["rollouts"], "batch_size": batch_size}
    generator = RolloutGenerator(model, data.observations, rollouts["horizon"], batch_size, seed=0)
    store = RolloutStore.create(
        folder / "bench.zarr",
        obs_dim=OBS_DIM,
        act_dim=ACT_DIM,
        uncertainty_names=list(UNCERTAINTY_FEATURES),
        metadata={},
    )
    generate_seconds, write_seconds, rows = [], [], 0
    for number in range(repeats):
        started = time.perf_counter()
        generation = generator.generate(learner, number, 0)
        generate_seconds.append(time.perf_counter() - started)
        started = time.perf_counter()
        store.append(generation)
        write_seconds.append(time.perf_counter() - started)
        rows = len(generation)
    generate, write = float(np.median(generate_seconds)), float(np.median(write_seconds))
    return {
        "batch_size": rollouts["batch_size"],
        "horizon": rollouts["horizon"],
        "transitions_per_generation": rows,
        "generate_seconds": generate,
        "zarr_append_seconds": write,
        "generate_transitions_per_second": rows / generate,
        "zarr_append_transitions_per_second": rows / write,
        "generate_and_append_transitions_per_second": rows / (generate + write),
        "zarr_bytes_per_transition": sum(f.stat().st_size for f in (folder / "bench.zarr").rglob("*") if f.is_file())
        / (rows * repeats),
    }


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def updates_per_second(
    algo: str, data: TransitionData, steps: int, dynamics_store: str, folder: Path, rollouts: dict
) -> dict:
    entry = get_learner(algo)
    background = rollouts.get("background", True)
    overrides = {"dynamics": BENCH_DYNAMICS, "rollouts": rollouts}
    config = resolve_algo_config(algo, data.info.dataset_id, overrides)
    trainer_config = build_config(
        TrainerConfig, {**config["trainer"], "steps": steps, "log_every": steps, "eval_every": 10 * steps}, "trainer"
    )
    extras = {}
    if entry.model_based:
        run_dir = folder / f"{algo}-{'background' if background else 'sync'}"
        setup = prepare_model_based_run(algo, data, config, run_dir, data.device, seed=0, dynamics_store=dynamics_store)
        sampler, extras = setup.sampler, setup.context_extras
    else:
        sampler = RealSampler(data, trainer_config.batch_size, seed=0)
    learner, _ = make_learner(algo, data, steps, extras)
    trainer = OfflineTrainer(learner, sampler, trainer_config, progress=False)
    load_before = load_average()
    started = time.perf_counter()
    sampler.prepare(0, learner)  # generation 0 (model-based only): synchronous, timed apart
    first_generation = time.perf_counter() - started
    started = time.perf_counter()
    trainer.fit()
    sampler.close()  # waits for the last generation's write: counted
    seconds = time.perf_counter() - started
    return {
        "steps": steps,
        "background": background if entry.model_based else None,
        "first_generation_seconds": first_generation,
        "seconds": seconds,
        "updates_per_second": steps / seconds,
        "updates_per_second_with_first_generation": steps / (seconds + first_generation),
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="updates for SAC, MOPO, MOReL (default 3000)")
    parser.add_argument(
        "--cql-steps", type=int, default=2000, help="updates for CQL and COMBO (default 2000; 0 skips them)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument(
        "--scale",
        type=int,
        default=1,
        help="divide the refresh period and the rollout batch by this (same rollout work per update, more "
        "refreshes in fewer steps: for a loaded machine; default 1)",
    )
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "model_based.json"))
    args = parser.parse_args()
    scaled = {"refresh_every": 1000 // args.scale, "batch_size": 50_000 // args.scale}
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = synthetic_hopper_sized(TRANSITIONS)
    result: dict = {
        "command": "python benchmarks/model_based.py " + " ".join(sys.argv[1:]),
        "rollouts": {**scaled, "horizon": 5, "retain_generations": 5},
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "threads": args.threads,
        },
        "data": f"synthetic Hopper-sized (obs {OBS_DIM}, act {ACT_DIM}), {TRANSITIONS} transitions",
        "target": "model-based updates/s >= 0.90 x its model-free twin (issue 15), rollouts and Zarr writes included",
    }
    trainer: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store = str(folder / "dynamics")
        started = time.perf_counter()
        model = DynamicsService.fit(data, BENCH_DYNAMICS, store=store, progress=False)
        print(f"dynamics model ({BENCH_DYNAMICS}) trained in {time.perf_counter() - started:.0f} s", flush=True)
        result["rollout_generation"] = rollout_rates(data, model, folder, scaled["batch_size"])
        result["trainer"] = trainer
        write(result, args.out)
        for model_based, model_free, length in PAIRS:
            steps = getattr(args, length)
            if steps == 0:
                continue
            for algo in (model_free, model_based):
                if algo not in trainer:
                    trainer[algo] = updates_per_second(algo, data, steps, store, folder, scaled)
            trainer[f"{model_based}_vs_{model_free}"] = (
                trainer[model_based]["updates_per_second"] / trainer[model_free]["updates_per_second"]
            )
            write(result, args.out)
        if args.steps > 0:
            sync = {**scaled, "background": False}
            trainer["mopo_sync"] = updates_per_second("mopo", data, args.steps, store, folder, sync)
            trainer["mopo_sync_vs_sac"] = (
                trainer["mopo_sync"]["updates_per_second"] / trainer["sac"]["updates_per_second"]
            )
            write(result, args.out)


def write(result: dict, out: str) -> None:
    """Rewrite the results file after each measurement, so a long run interrupted keeps what it measured."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2), flush=True)


if __name__ == "__main__":
    main()
