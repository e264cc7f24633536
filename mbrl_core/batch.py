"""A batch of transitions, the one thing every learner's ``update`` receives."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# The five fields of a transition, in Batch's order: the datasets, the model buffer and the rollout store
# all hold these (plus their own extras).
TRANSITION_FIELDS = ("observations", "actions", "rewards", "next_observations", "terminals")
# The float-valued ones, checked for NaN/inf.
FLOAT_FIELDS = TRANSITION_FIELDS[:4]


@dataclass
class Batch:
    """Transitions gathered on the training device.

    ``terminals`` is 1.0 where the environment (or the model's termination
    rule) ended the episode: bootstrapping stops there and nowhere else.
    ``synthetic`` marks rows drawn from model rollouts (all False for real
    data); ``uncertainty`` holds the model's named uncertainty features for
    every row (zeros on real rows), so a learner applies its own penalty.
    ``rewards`` are raw: penalties are applied by the learner at sampling time.
    """

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_observations: torch.Tensor
    terminals: torch.Tensor
    synthetic: torch.Tensor | None = None
    uncertainty: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.observations.shape[0])

    @property
    def synthetic_mask(self) -> torch.Tensor:
        if self.synthetic is None:
            return torch.zeros(len(self), dtype=torch.bool, device=self.observations.device)
        return self.synthetic

    @staticmethod
    def concat(first: Batch, second: Batch) -> Batch:
        """Stack two batches (real rows first); uncertainty features missing on one side are zeros."""
        names = set(first.uncertainty) | set(second.uncertainty)

        def feature(batch: Batch, name: str) -> torch.Tensor:
            return batch.uncertainty.get(name, torch.zeros_like(batch.rewards))

        return Batch(
            observations=torch.cat([first.observations, second.observations]),
            actions=torch.cat([first.actions, second.actions]),
            rewards=torch.cat([first.rewards, second.rewards]),
            next_observations=torch.cat([first.next_observations, second.next_observations]),
            terminals=torch.cat([first.terminals, second.terminals]),
            synthetic=torch.cat([first.synthetic_mask, second.synthetic_mask]),
            uncertainty={name: torch.cat([feature(first, name), feature(second, name)]) for name in sorted(names)},
        )
