"""MOPO (Yu et al. 2020): SAC on model rollouts with an uncertainty-penalized reward.

    r̃(s, a) = r̂(s, a) − λ · u(s, a),     u(s, a) = max_i ‖σ_i(s, a)‖₂

u is the official ``penalty_learned_var`` estimate (tianheyu927/mopo
``mopo/models/fake_env.py``; OfflineRL-Kit ``offlinerlkit/dynamics/ensemble_dynamics.py``
"aleatoric"): the largest L2 norm, over all ensemble members, of the predicted
std vector (reward dimension included); the rollouts store it as the
``max_std_norm`` feature next to the raw reward. The penalty is applied here,
on the sampled batch, so one set of stored rollouts serves any λ. Real rows
carry no penalty (their u is 0 and they are not synthetic).

The policy optimizer is the SAC core, set as the source of the (λ, h) in use
(``configs/mopo.yaml``): by default OfflineRL-Kit ``run_example/run_mopo.py``,
whose suggested (λ, h) per D4RL -v2 task fill the per-dataset table: actor lr
1e-4 with a cosine decay over the run (``CosineAnnealingLR`` on the actor only),
critic lr 3e-4, α lr 1e-4, target entropy −act_dim. The official code's D4RL -v0
values come with its own optimizer (softlearning SAC, every lr 3e-4, target
entropy −3 for every task: ``examples/config/d4rl/base.py``), which the -v0 id
patterns in the YAML set. Kept from ours: α is not clamped to ≤ 1 (OfflineRL-Kit's
SACPolicy clamps it; it starts at 1 and falls under auto-entropy tuning).

Every update logs, over the batch's model rows, ``model_reward_mean`` (r̂) and
``penalty_mean`` (λ·u): a penalty that swamps the reward shows there.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch.optim.lr_scheduler import LRScheduler

from mbrl_core.batch import Batch
from mbrl_core.contracts import MAX_STD_NORM
from mbrl_core.learner import LearnerContext
from policies.sac import SAC, SACConfig


@dataclass
class MOPOConfig(SACConfig):
    # OfflineRL-Kit run_example/run_mopo.py: actor lr 1e-4 (cosine), alpha lr 1e-4; critic 3e-4 as SACConfig.
    actor_lr: float = 1e-4
    alpha_lr: float = 1e-4
    cosine_actor_lr: bool = True
    # λ: set per dataset (configs/mopo.yaml); 1.0 is the official -v0 configs' most common value.
    penalty: float = 1.0
    uncertainty_feature: str = MAX_STD_NORM


def penalized_rewards(
    rewards: torch.Tensor, uncertainty: torch.Tensor, synthetic: torch.Tensor, penalty: float
) -> torch.Tensor:
    """r − λ·u on synthetic rows, r on real rows."""
    return rewards - penalty * uncertainty * synthetic.to(rewards.dtype)


def synthetic_mean(values: torch.Tensor, synthetic: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the model rows (0 when the batch has none)."""
    mask = synthetic.to(values.dtype)
    return (values.detach() * mask).sum() / mask.sum().clamp(min=1.0)


def model_reward_metrics(batch: Batch, penalty_per_row: torch.Tensor) -> dict[str, torch.Tensor]:
    """The model's raw reward and the penalty taken off it, each averaged over the batch's model rows."""
    return {
        "model_reward_mean": synthetic_mean(batch.rewards, batch.synthetic_mask),
        "penalty_mean": synthetic_mean(penalty_per_row, batch.synthetic_mask),
    }


def cosine_actor_schedule(optimizer: torch.optim.Optimizer, context: LearnerContext) -> LRScheduler:
    """OfflineRL-Kit's ``CosineAnnealingLR(actor_optim, epochs)``, stepped per update over the run, not per epoch."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, context.total_steps))


class MOPO(SAC):
    config: MOPOConfig

    def __init__(self, config: MOPOConfig, context: LearnerContext) -> None:
        super().__init__(config, context)
        if config.cosine_actor_lr:
            self.schedulers["actor"] = cosine_actor_schedule(self.optimizers["actor"], context)

    def transform_batch(self, batch: Batch) -> Batch:
        if batch.synthetic is None:
            return batch
        u = batch.uncertainty[self.config.uncertainty_feature]
        return replace(batch, rewards=penalized_rewards(batch.rewards, u, batch.synthetic, self.config.penalty))

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        metrics = super().update(batch)
        for scheduler in self.schedulers.values():
            scheduler.step()
        if batch.synthetic is not None:
            u = batch.uncertainty[self.config.uncertainty_feature]
            metrics.update(model_reward_metrics(batch, self.config.penalty * u))
        return metrics
