"""MOPO (Yu et al. 2020): SAC on model rollouts with an uncertainty-penalized reward.

    r̃(s, a) = r̂(s, a) − λ · u(s, a),     u(s, a) = max_i ‖σ_i(s, a)‖₂

u is the official ``penalty_learned_var`` estimate: the largest L2 norm, over
all ensemble members, of the predicted std vector (reward dimension included);
the rollouts store it as the ``max_std_norm`` feature next to the raw reward.
The penalty is applied here, on the sampled batch, so one set of stored
rollouts serves any λ. Real rows carry no penalty (their u is 0 and they are
not synthetic). Everything else is the SAC core: MOPO's policy optimizer is
softlearning's SAC (2x256, lr 3e-4, auto-entropy).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from mbrl_core.batch import Batch
from mbrl_core.contracts import MAX_STD_NORM
from policies.sac import SAC, SACConfig


@dataclass
class MOPOConfig(SACConfig):
    # λ: the official -v0 table and its -v2 reproductions set it per dataset (configs/mopo.yaml).
    penalty: float = 1.0
    uncertainty_feature: str = MAX_STD_NORM


def penalized_rewards(
    rewards: torch.Tensor, uncertainty: torch.Tensor, synthetic: torch.Tensor, penalty: float
) -> torch.Tensor:
    """r − λ·u on synthetic rows, r on real rows."""
    return rewards - penalty * uncertainty * synthetic.to(rewards.dtype)


class MOPO(SAC):
    config: MOPOConfig

    def transform_batch(self, batch: Batch) -> Batch:
        if batch.synthetic is None:
            return batch
        u = batch.uncertainty[self.config.uncertainty_feature]
        return replace(batch, rewards=penalized_rewards(batch.rewards, u, batch.synthetic, self.config.penalty))

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        metrics = super().update(batch)
        if batch.synthetic is not None:
            metrics["penalty_mean"] = (
                self.config.penalty * batch.uncertainty[self.config.uncertainty_feature].detach().mean()
            )
        return metrics
