"""COMBO (Yu et al. 2021): CQL whose conservative term pushes Q down on model states.

    L_Q = Bellman error on d_f  +  β ( E_{s~ρ, a~π(·|s)}[Q(s,a)]  −  E_{(s,a)~D}[Q(s,a)] )

d_f mixes dataset rows (fraction f, 0.5 by default) and model-rollout rows.
Push-up: only the dataset's (s, a) rows. Push-down (``push_down_states``):
  "mix"     the states of the whole mixed batch (d_f), what OfflineRL-Kit's
            ``rho-s mix`` does and our default;
  "model"   model-rollout states only, the paper's ρ(s) = d^π_M̂(s);
  "dataset" dataset states only (CQL's choice, for ablations).
The log-sum-exp over actions (uniform and policy proposals) is CQL's; see
policies/cql.py. Which states feed the push-down changes hopper-medium by tens
of points in a peer's tracker, so it is a config key and tested.

Defaults: OfflineRL-Kit ``run_combo.py`` [R] (no official code): 3x256 nets,
actor lr 1e-4, critic lr 3e-4, auto-α, β (``cql_alpha``) 5.0, temperature 1,
10 sampled actions, no Lagrange, deterministic backup.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mbrl_core.batch import Batch
from mbrl_core.errors import ConfigError
from policies.cql import CQL, CQLConfig

PUSH_DOWN_CHOICES = ("mix", "model", "dataset")


@dataclass
class COMBOConfig(CQLConfig):
    actor_lr: float = 1e-4
    alpha_lr: float = 1e-4
    cql_alpha: float = 5.0  # β
    push_down_states: str = "mix"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.push_down_states not in PUSH_DOWN_CHOICES:
            raise ConfigError(
                f"combo.push_down_states must be one of {', '.join(PUSH_DOWN_CHOICES)}, got '{self.push_down_states}'"
            )


class COMBO(CQL):
    config: COMBOConfig

    def push_down_rows(self, batch: Batch) -> torch.Tensor | None:
        choice = self.config.push_down_states
        if choice == "mix":
            return None
        return batch.synthetic_mask if choice == "model" else ~batch.synthetic_mask

    def push_up_rows(self, batch: Batch) -> torch.Tensor | None:
        return ~batch.synthetic_mask
