"""The online replay buffer of the behaviour SAC; what it holds up to the medium checkpoint is medium-replay."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mbrl_core.batch import Batch
from mbrl_core.seeding import make_generator


class ReplayBuffer:
    """Every online step in preallocated tensors; a batch is an index draw and a gather."""

    FIELDS = ("observations", "actions", "rewards", "next_observations", "terminated", "truncated")

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device, seed: int) -> None:
        shapes = {"observations": (obs_dim,), "actions": (act_dim,), "next_observations": (obs_dim,)}
        self.tensors = {name: torch.zeros((capacity, *shapes.get(name, ())), device=device) for name in self.FIELDS}
        self.size = 0
        self.generator = make_generator(seed, device)

    def add(
        self,
        observation: np.ndarray,
        action: np.ndarray,
        reward: float,
        next_observation: np.ndarray,
        terminated: bool,
        truncated: bool,
    ) -> None:
        row = (observation, action, reward, next_observation, float(terminated), float(truncated))
        for name, value in zip(self.FIELDS, row):
            self.tensors[name][self.size] = torch.as_tensor(value, dtype=torch.float32)
        self.size += 1

    def sample(self, batch_size: int) -> Batch:
        index = torch.randint(self.size, (batch_size,), device=self.generator.device, generator=self.generator)
        rows = {name: tensor[index] for name, tensor in self.tensors.items()}
        # only terminations stop bootstrapping; a time-limit truncation does not
        return Batch(
            rows["observations"], rows["actions"], rows["rewards"], rows["next_observations"], rows["terminated"]
        )

    def episodes(self, end: int) -> list[dict[str, np.ndarray]]:
        """Rows ``[0, end)`` as Minari episodes; an episode cut at ``end`` is marked truncated."""
        rows = {name: tensor[:end].cpu().numpy() for name, tensor in self.tensors.items()}
        done = (rows["terminated"] + rows["truncated"]) > 0
        ends = np.r_[np.flatnonzero(done[:-1]), end - 1]
        episodes, start = [], 0
        for last in ends:
            span = slice(start, last + 1)
            truncations = rows["truncated"][span] > 0
            truncations[-1] |= not rows["terminated"][last]
            episodes.append(
                {
                    "observations": np.concatenate(
                        [rows["observations"][span], rows["next_observations"][last : last + 1]]
                    ),
                    "actions": rows["actions"][span],
                    "rewards": rows["rewards"][span].astype(np.float64),
                    "terminations": rows["terminated"][span] > 0,
                    "truncations": truncations,
                }
            )
            start = last + 1
        return episodes

    def state_dict(self) -> dict[str, Any]:
        """Tensors and an int only: the state file loads with ``torch.load(weights_only=True)``."""
        return {
            "size": self.size,
            "generator": self.generator.get_state(),
            "rows": {name: t[: self.size].cpu() for name, t in self.tensors.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.size = int(state["size"])
        for name, rows in state["rows"].items():
            self.tensors[name][: self.size] = rows.to(self.tensors[name].device)
        self.generator.set_state(state["generator"])
