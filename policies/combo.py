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

No official code: every default is OfflineRL-Kit's (yihaosun1124/OfflineRL-Kit
``run_example/run_combo.py``), whose suggested (β, h) per D4RL -v2 task fill the
per-dataset table of ``configs/combo.yaml``: 3x256 nets, actor lr 1e-4 with a
cosine decay over the run (``CosineAnnealingLR`` on the actor only), critic lr
3e-4, α lr 1e-4, auto-α with target entropy −act_dim, β (``cql_alpha``) 5.0,
temperature 1, 10 sampled actions, no Lagrange, deterministic backup, raw
observations (``normalize_obs`` is only called by its TD3+BC and RAMBO scripts)
and PyTorch's default init for actor and critics. The actor is OfflineRL-Kit's
``TanhDiagGaussian(unbounded=True, conditioned_sigma=True)``
(``offlinerlkit/modules/dist_module.py``): mean and log-std heads on one MLP,
the log-std hard-clamped to [-5, 2], the sample squashed by tanh. It replaces
CQL's actor (learned log-std scale and offset, clamp [-20, 2], small output
init), so CQL's ``log_std_offset`` key does nothing here.

Every update logs ``model_reward_mean`` (the model's reward over the batch's
model rows); COMBO takes no penalty off that reward, its conservatism is
β·``cql_gap`` on Q.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mbrl_core.batch import Batch
from mbrl_core.errors import ConfigError
from mbrl_core.learner import LearnerContext
from policies.cql import CQL, CQLConfig
from policies.mopo import cosine_actor_schedule, synthetic_mean
from policies.networks import SquashedGaussian, mlp

PUSH_DOWN_CHOICES = ("mix", "model", "dataset")
# OfflineRL-Kit dist_module.py DiagGaussian: sigma_min -5.0, sigma_max 2.0 (bounds of the log-std).
LOG_STD_BOUNDS = (-5.0, 2.0)


@dataclass
class COMBOConfig(CQLConfig):
    actor_lr: float = 1e-4
    alpha_lr: float = 1e-4
    cosine_actor_lr: bool = True
    normalize_observations: bool = False
    orthogonal_init: bool = False
    cql_alpha: float = 5.0  # β
    push_down_states: str = "mix"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.push_down_states not in PUSH_DOWN_CHOICES:
            raise ConfigError(
                f"combo.push_down_states must be one of {', '.join(PUSH_DOWN_CHOICES)}, got '{self.push_down_states}'"
            )


class ClampedTanhGaussianActor(nn.Module):
    """OfflineRL-Kit's actor: an MLP emitting mean and log-std (clamped to [-5, 2]) of a tanh-squashed Gaussian."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.act_dim = act_dim
        self.net = mlp(obs_dim, hidden, 2 * act_dim)

    def forward(self, observations: torch.Tensor) -> SquashedGaussian:
        mean, log_std = self.net(observations).split(self.act_dim, dim=-1)
        return SquashedGaussian(mean, log_std.clamp(*LOG_STD_BOUNDS))


class COMBO(CQL):
    config: COMBOConfig

    def __init__(self, config: COMBOConfig, context: LearnerContext) -> None:
        super().__init__(config, context)
        if config.cosine_actor_lr:
            self.schedulers["actor"] = cosine_actor_schedule(self.optimizers["actor"], context)

    def build_actor(self, context: LearnerContext) -> nn.Module:
        return ClampedTanhGaussianActor(context.obs_dim, context.act_dim, self.config.hidden_sizes)

    def push_down_rows(self, batch: Batch) -> torch.Tensor | None:
        choice = self.config.push_down_states
        if choice == "mix":
            return None
        return batch.synthetic_mask if choice == "model" else ~batch.synthetic_mask

    def push_up_rows(self, batch: Batch) -> torch.Tensor | None:
        return ~batch.synthetic_mask

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        metrics = super().update(batch)
        for scheduler in self.schedulers.values():
            scheduler.step()
        if batch.synthetic is not None:
            metrics["model_reward_mean"] = synthetic_mean(batch.rewards, batch.synthetic)
        return metrics
