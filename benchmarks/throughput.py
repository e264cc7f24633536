"""Gradient updates per second of each model-free learner, and how close that is to the machine's matmul rate.

Batch 256, default networks, Hopper-sized random data (obs 11, act 3), CPU,
with 1 and 2 threads. Efficiency = (analytic FLOPs per update x updates/s) /
(float32 FLOP rate of batched 256x256 matmuls on this machine). Rates are
the best window (1 s for learners, 0.3 s for the matmul) of each measurement, so that other processes on a
shared machine distort them less.

    python benchmarks/throughput.py [--threads 1 2] [--seconds 5] [--out benchmarks/results/throughput.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from mbrl_core.batch import Batch
from mbrl_core.learner import LearnerContext
from mbrl_core.normalization import Normalizer
from policies.registry import get_learner

OBS_DIM, ACT_DIM, BATCH = 11, 3, 256
LEARNERS = ["bc", "td3bc", "iql", "awac", "cql", "sac"]
# Not defaults: AWAC and CQL with 2x256 networks (CORL uses 3x256), to compare equal work with
# libraries whose default networks are 2x256.
VARIANTS = {"awac-2x256": ("awac", {"hidden_sizes": (256, 256)}), "cql-2x256": ("cql", {"hidden_sizes": (256, 256)})}


def learner_config(row: str):
    """(learner name, config) of a table row: a learner's defaults or a variant."""
    name, overrides = VARIANTS.get(row, (row, {}))
    return name, get_learner(name).config_cls(**overrides)


# A widely used library on this machine class, 1 thread (from the issue).
REFERENCE_1_THREAD = {"iql": 55.0, "td3bc": 71.0, "awac": 65.0, "bc": 176.0, "cql": 8.0}
TARGET_SPEEDUP = {"iql": 2.0, "td3bc": 2.0, "awac": 2.0, "cql": 1.5}


# ----------------------------------------------------------------------------- analytic FLOPs


def mlp_macs(widths: list[int]) -> int:
    """Multiply-adds of one row through Linear layers of the given widths."""
    return sum(a * b for a, b in zip(widths[:-1], widths[1:]))


class Cost:
    """Counts multiply-adds of forward and backward passes (a backward costs a forward per gradient kind)."""

    def __init__(self) -> None:
        self.macs = 0

    def forward(self, widths: list[int], rows: int) -> None:
        self.macs += rows * mlp_macs(widths)

    def train(self, widths: list[int], rows: int) -> None:
        """Forward, weight gradients, input gradients of every layer but the first."""
        self.macs += rows * (3 * mlp_macs(widths) - widths[0] * widths[1])

    def through(self, widths: list[int], rows: int) -> None:
        """Forward and input gradients only (an actor's loss through a frozen critic)."""
        self.macs += rows * 2 * mlp_macs(widths)

    @property
    def flops(self) -> int:
        return 2 * self.macs


def flops_per_update(name: str, config) -> float:
    hidden = list(config.hidden_sizes) if hasattr(config, "hidden_sizes") else []
    actor = [OBS_DIM, *hidden, ACT_DIM]
    gaussian_actor = [OBS_DIM, *hidden, 2 * ACT_DIM]
    critic = [OBS_DIM + ACT_DIM, *hidden, 1]
    value = [OBS_DIM, *hidden, 1]
    b, cost = BATCH, Cost()
    if name == "bc":
        cost.train(actor, b)
    elif name == "td3bc":
        cost.forward(actor, b)  # target actor at s'
        cost.forward(critic, 2 * b)  # target critics
        cost.train(critic, 2 * b)
        actor_step = Cost()
        actor_step.train(actor, b)
        actor_step.through(critic, b)  # Q1 only
        cost.macs += actor_step.macs / config.policy_freq
    elif name == "iql":
        cost.forward(critic, 2 * b)  # target critics at (s, a)
        cost.forward(value, b)  # V(s')
        cost.train(value, b)
        cost.train(critic, 2 * b)
        cost.train(actor, b)
    elif name == "awac":
        cost.train(actor, b)
        cost.forward(actor, b)  # π(s')
        cost.forward(critic, 2 * b)  # target critics
        cost.forward(critic, 2 * b)  # V(s) = min Q(s, ã)
        cost.train(critic, 2 * b)
    elif name in ("sac", "cql"):
        cost.train(gaussian_actor, b)
        cost.forward(gaussian_actor, b)  # π(s')
        cost.forward(critic, 2 * b)  # target critics
        cost.train(critic, 2 * b)
        cost.through(critic, 2 * b)  # actor loss through both critics
        if name == "cql":
            cost.train(critic, 2 * b * 3 * config.n_actions)  # random, π(s), π(s') actions
    return float(cost.flops)


# ----------------------------------------------------------------------------- measurements


def best_rate(work, seconds: float, window: float = 0.3) -> tuple[float, float]:
    """(units per wall second, units per process-CPU second) of the fastest ~``window``-second windows.

    The best window (as ``timeit`` advises) filters out time stolen by other
    processes on a shared machine; the CPU-time rate is what an idle machine
    would give a one-thread run (with n threads it is per core-second).
    ``work()`` returns the units it did.
    """
    best_wall = best_cpu = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or best_wall == 0.0:
        units, start, start_cpu = 0.0, time.perf_counter(), time.process_time()
        while time.perf_counter() - start < window:
            units += work()
        best_wall = max(best_wall, units / (time.perf_counter() - start))
        best_cpu = max(best_cpu, units / max(time.process_time() - start_cpu, 1e-9))
    return best_wall, best_cpu


def matmul_flop_rate(seconds: float) -> float:
    """float32 FLOP/s of a batch of 16 independent 256x256 @ 256x256 matmuls."""
    a, b = torch.randn(16, 256, 256), torch.randn(16, 256, 256)

    def work() -> float:
        torch.bmm(a, b)
        return 2 * 16 * 256**3

    work()
    return best_rate(work, seconds)[0]


def hopper_context() -> LearnerContext:
    return LearnerContext(
        obs_dim=OBS_DIM,
        act_dim=ACT_DIM,
        action_low=-torch.ones(ACT_DIM),
        action_high=torch.ones(ACT_DIM),
        observation_normalizer=Normalizer(torch.randn(OBS_DIM), torch.rand(OBS_DIM) + 0.5),
        total_steps=1_000_000,
        device=torch.device("cpu"),
        reward_min=-1.0,
        reward_max=5.0,
        episode_return_min=0.0,
        episode_return_max=3000.0,
    )


def random_batches(count: int, generator: torch.Generator) -> list[Batch]:
    def batch() -> Batch:
        return Batch(
            observations=torch.randn(BATCH, OBS_DIM, generator=generator),
            actions=torch.rand(BATCH, ACT_DIM, generator=generator) * 2 - 1,
            rewards=torch.randn(BATCH, generator=generator),
            next_observations=torch.randn(BATCH, OBS_DIM, generator=generator),
            terminals=(torch.rand(BATCH, generator=generator) < 0.01).float(),
        )

    return [batch() for _ in range(count)]


def updates_per_second(row: str, batches: list[Batch], seconds: float, warmup: int = 5) -> tuple[float, float]:
    name, config = learner_config(row)
    learner = get_learner(name).learner_cls(config, hopper_context())
    for i in range(warmup):
        learner.update(batches[i % len(batches)])
    done = [0]

    def work() -> float:
        learner.update(batches[done[0] % len(batches)])
        done[0] += 1
        return 1.0

    return best_rate(work, seconds, window=1.0)


def run(threads: list[int], seconds: float, names: list[str]) -> dict:
    torch.manual_seed(0)
    batches = random_batches(16, torch.Generator().manual_seed(0))
    results = {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "batch_size": BATCH,
        "obs_dim": OBS_DIM,
        "act_dim": ACT_DIM,
        "reference_1_thread": REFERENCE_1_THREAD,
        "load_average_before": os.getloadavg(),
        "threads": {},
    }
    for count in threads:
        torch.set_num_threads(count)
        rate = matmul_flop_rate(min(seconds, 2.0))
        rows = {}
        for name in names:
            speed, per_cpu_second = updates_per_second(name, batches, seconds)
            flops = flops_per_update(*learner_config(name))
            rows[name] = {
                "updates_per_second": speed,
                "updates_per_cpu_second": per_cpu_second,
                "gflop_per_update": flops / 1e9,
                "efficiency": flops * speed / rate,
            }
            reference = REFERENCE_1_THREAD.get(learner_config(name)[0])
            if count == 1 and reference:
                rows[name]["speedup_vs_reference"] = speed / reference
        results["threads"][str(count)] = {"matmul_gflops": rate / 1e9, "learners": rows}
    results["load_average_after"] = os.getloadavg()
    return results


def print_table(results: dict) -> None:
    counts = list(results["threads"])
    print(
        "learner     GFLOP/upd  "
        + "  ".join(f"{c}T upd/s  {c}T eff  {c}T upd/cpu-s" for c in counts)
        + "   ref(1T)  x ref  target"
    )
    names = list(next(iter(results["threads"].values()))["learners"])
    for name in names:
        first = results["threads"][counts[0]]["learners"][name]
        cells = "  ".join(
            "{updates_per_second:8.1f}  {efficiency:6.0%}  {updates_per_cpu_second:12.1f}".format(
                **results["threads"][c]["learners"][name]
            )
            for c in counts
        )
        reference = REFERENCE_1_THREAD.get(learner_config(name)[0])
        target = TARGET_SPEEDUP.get(name, "-")
        ref = (
            f"{reference:7.0f}  {first['updates_per_second'] / reference:5.2f}  {target}"
            if reference
            else "      -      -  -"
        )
        print(f"{name:10s}  {first['gflop_per_update']:9.3f}  {cells}   {ref}")
    for c in counts:
        print(
            f"matmul rate, {c} thread(s): {results['threads'][c]['matmul_gflops']:.1f} GFLOP/s (16 x 256x256x256 bmm)"
        )
    print(
        "load average before/after: {} / {}".format(
            *(tuple(round(x, 2) for x in results[k]) for k in ("load_average_before", "load_average_after"))
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=5.0, help="measurement time per learner and thread count")
    parser.add_argument("--learners", nargs="+", default=LEARNERS + list(VARIANTS), choices=LEARNERS + list(VARIANTS))
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "throughput.json"))
    args = parser.parse_args()
    results = run(args.threads, args.seconds, args.learners)
    print_table(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
