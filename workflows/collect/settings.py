"""What a collection is: its settings, the datasets it writes, where it keeps its state, its seed streams."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mbrl_core.data import local_datasets_root
from mbrl_core.errors import ConfigError

DATASET_KINDS = ("random", "medium", "expert", "medium-replay", "medium-expert")
SEED_STREAMS = {"train": 0, "eval": 1, "random": 2, "medium": 3, "expert": 4}
STATE_FILE = "state.pt"
RECORD_FILE = "collection.json"
STATE_VERSION = 1


@dataclass
class CollectConfig:
    env_id: str
    name: str  # Minari namespace: the datasets are <name>/<kind>-v0
    sac_steps: int = 1_000_000  # D4RL trained its SAC behaviour policies for 1M steps
    warmup_steps: int = 5000  # uniformly random actions before the first SAC update
    batch_size: int = 256
    checkpoint_every: int = 10_000
    eval_episodes: int = 10
    medium_fraction: float = 1 / 3  # D4RL: "about one third of the expert's performance"
    random_transitions: int = 1_000_000  # D4RL's sizes: 1M each (medium-expert is their union)
    medium_transitions: int = 1_000_000
    expert_transitions: int = 1_000_000
    seed: int = 0
    device: str = "auto"
    sac: dict[str, Any] = field(default_factory=dict)  # SACConfig overrides

    def __post_init__(self) -> None:
        for name in (
            "sac_steps",
            "checkpoint_every",
            "eval_episodes",
            "batch_size",
            "random_transitions",
            "medium_transitions",
            "expert_transitions",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"collect: {name} must be at least 1 (got {getattr(self, name)})")
        if not 0 <= self.warmup_steps < self.sac_steps:
            raise ConfigError(
                f"collect: warmup_steps must be in [0, sac_steps) (got {self.warmup_steps} with "
                f"sac_steps {self.sac_steps})"
            )
        if not 0.0 < self.medium_fraction <= 1.0:
            raise ConfigError(f"collect: medium_fraction must be in (0, 1] (got {self.medium_fraction})")


def dataset_ids(name: str) -> dict[str, str]:
    return {kind: f"{name}/{kind}-v0" for kind in DATASET_KINDS}


def collection_dir(name: str) -> Path:
    return local_datasets_root() / name / "collection"


def stream_seed(seed: int, stream: str, index: int = 0) -> int:
    """Independent seeds per purpose and episode number: resets never depend on what ran before."""
    return int(np.random.SeedSequence([seed, SEED_STREAMS[stream], index]).generate_state(1)[0] >> 1)
