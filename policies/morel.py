"""MOReL (Kidambi et al. 2020): policy optimization in a pessimistic MDP, here with SAC.

USAD, the unknown state-action detector, flags (s, a) where the ensemble
members disagree:

    U(s, a) = [ disc(s, a) > threshold ],   disc(s, a) = max_{i,j} ‖μ_i(s, a) − μ_j(s, a)‖₂
    threshold = pessimism_coef × max_{(s,a) ∈ D} disc(s, a)

as the official code (aravindr93/mjrl ``projects/morel/run_morel.py``:
``truncate_lim = pessimism_coef * np.max(delta)``): a LARGER coefficient is a
larger threshold, i.e. LESS pessimism. In the pessimistic MDP an unknown
(s, a) leads to the absorbing HALT state with reward −κ:

    r̃, d̃ = (−κ, 1)  if U(s, a)   else (r̂, d̂)

κ = ``halt_penalty``: 0 reproduces the released configs (``truncate_reward 0.0``),
a positive κ the paper's −κ.

Generation stops a rollout at its first unknown row (with the threshold of
that time); the HALT reward and terminal flag are applied here, at sampling
time, from the stored disagreement, so κ and the coefficient can change
without new rollouts. Trade-off: a LOWER threshold than at generation turns
later rows of a rollout into transitions from states past a HALT (still valid
model transitions, just never reached in the pessimistic MDP); a HIGHER one
leaves rollouts cut short where a state is no longer unknown (like a timeout,
bootstrapping continues).

The policy optimizer is SAC on the pessimistic MDP's branched rollouts (plus a
small real fraction), not the paper's NPG on long rollouts from initial
states: the same trainer and critic as MOPO, so the two compare fairly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from mbrl_core.batch import Batch
from mbrl_core.contracts import DISAGREEMENT_MAX, MAX_PAIRWISE_DISAGREEMENT
from mbrl_core.errors import ConfigError
from mbrl_core.learner import LearnerContext
from policies.sac import SAC, SACConfig


@dataclass
class MOReLConfig(SACConfig):
    # mjrl projects/morel/configs/d4rl_hopper_medium.txt: pessimism_coef 3.0, truncate_reward 0.0.
    pessimism_coef: float = 3.0
    halt_penalty: float = 0.0
    uncertainty_feature: str = MAX_PAIRWISE_DISAGREEMENT

    def halt_threshold(self, disagreement_max: float) -> float:
        """USAD's threshold; a coefficient of 0 (or less) turns pessimism off, as ``None`` does in mjrl.
        (A model-based setup also halts rollouts with it: any learner config with this method gets halting.)"""
        return self.pessimism_coef * disagreement_max if self.pessimism_coef > 0 else float("inf")


def halt_unknown(batch: Batch, unknown: torch.Tensor, halt_reward: float) -> Batch:
    """Send unknown rows to the absorbing HALT state: reward ``halt_reward``, terminal."""
    rewards = torch.where(unknown, torch.full_like(batch.rewards, halt_reward), batch.rewards)
    terminals = torch.maximum(batch.terminals, unknown.to(batch.terminals.dtype))
    return replace(batch, rewards=rewards, terminals=terminals)


class MOReL(SAC):
    config: MOReLConfig

    def __init__(self, config: MOReLConfig, context: LearnerContext) -> None:
        if DISAGREEMENT_MAX not in context.extras:
            raise ConfigError(
                f"MOReL needs '{DISAGREEMENT_MAX}' from the dynamics model in the learner context "
                "(run it through a model-based setup)"
            )
        super().__init__(config, context)
        self.threshold = config.halt_threshold(float(context.extras[DISAGREEMENT_MAX]))

    def unknown(self, batch: Batch) -> torch.Tensor:
        return batch.synthetic_mask & (batch.uncertainty[self.config.uncertainty_feature] > self.threshold)

    def transform_batch(self, batch: Batch) -> Batch:
        if batch.synthetic is None:
            return batch
        return halt_unknown(batch, self.unknown(batch), -self.config.halt_penalty)

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        metrics = super().update(batch)
        if batch.synthetic is not None:
            metrics["halt_fraction"] = self.unknown(batch).float().mean()
        return metrics
