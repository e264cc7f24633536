"""MOReL (Kidambi et al. 2020): policy optimization in a pessimistic MDP, here with SAC.

USAD, the unknown state-action detector, flags (s, a) where the ensemble
members disagree:

    U(s, a) = [ disc(s, a) > threshold ],   disc(s, a) = max_{i,j} ‖μ_i(s, a) − μ_j(s, a)‖₂
    threshold = max_{(s,a) ∈ D} disc(s, a) / pessimism_coef

as the official code (aravindr93/mjrl, branch v2, ``projects/morel/run_morel.py``:
``truncate_lim = (1.0 / pessimism_coef) * np.max(delta)``): a LARGER coefficient
is a LOWER threshold, i.e. MORE pessimism; a coefficient of None or 0 turns
pessimism off ("naive MBRL" there; here also any coefficient ≤ 0).

The HALT transition, compared with mjrl v2 ``mjrl/algos/mbrl/model_based_npg.py``
(``ModelBasedNPG.train_step``):
- matched: a rollout is cut at its first unknown (s, a), that row is kept with
  its model reward, and ``truncate_reward`` is ADDED to it: here the unknown row
  gets r̂ − κ, κ = ``halt_penalty`` (0 = the released ``truncate_reward 0.0``; the
  paper's −κ HALT reward is κ > 0 on top of r̂).
- departure: the unknown row is terminal here. In mjrl the path's ``terminated``
  flag ends up False (it is compared after slicing), but NPG's baseline is fit
  to Monte-Carlo returns that stop at the cut, so nothing past HALT is ever
  credited there either. SAC's critic bootstraps by TD instead: without the
  terminal it would add Q̂ at the model's next state and the pessimism would vanish.
- not matched: mjrl drops paths shorter than 5 observations and never cuts a
  path before 4 steps. Both guard its 700-step rollouts from initial states;
  our rollouts are branched, at most ``horizon`` (5) steps from dataset states,
  so dropping short paths would drop every rollout that the model terminated
  (the terminal rows the critic needs) and the 4-step floor would keep 4 of 5
  steps past a HALT, undoing it.

Generation stops a rollout at its first unknown row (with the threshold of
that time: ``dynamics/rollouts.py`` ``Halting``); the HALT reward and terminal
are applied here, at sampling time, from the stored disagreement, so κ and the
coefficient can change without new rollouts (``mbrl_core/sampler.py``
``MixedSampler``). Trade-off: a LOWER threshold than at generation turns
later rows of a rollout into transitions from states past a HALT (still valid
model transitions, just never reached in the pessimistic MDP); a HIGHER one
leaves rollouts cut short where a state is no longer unknown (like a timeout,
bootstrapping continues).

The policy optimizer is SAC on the pessimistic MDP's branched rollouts (plus a
small real fraction), not the paper's NPG on long rollouts from initial
states: the same trainer, critic and optimizer settings as MOPO (policies/mopo.py),
so the two compare fairly. Only the rollouts are longer than MOPO's: 25 steps from 10,000 starts (the same
rows per generation as MOPO's 5 from 50,000). MOReL has no per-step penalty, so beyond HALT nothing but the
rollouts ground the critic, and a 5-step branch cannot reach a fall that takes ~20 steps: on hopper-medium
MOReL then learned to stand still, leaning back, with Q 230 against a real return of 20, while the model
predicted the fall within a step of the real one (``benchmarks/policy_vs_model.py``). mjrl's P-MDP runs up to
700 steps, until HALT or the model's termination. Every update logs ``halt_fraction`` (the share of the
batch's model rows that hit HALT), ``model_reward_mean`` and ``penalty_mean`` (κ
per model row).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from mbrl_core.batch import Batch
from mbrl_core.contracts import DISAGREEMENT_MAX, MAX_PAIRWISE_DISAGREEMENT
from mbrl_core.errors import ConfigError
from mbrl_core.learner import LearnerContext
from policies.mopo import cosine_actor_schedule, model_reward_metrics, synthetic_mean
from policies.sac import SAC, SACConfig


@dataclass
class MOReLConfig(SACConfig):
    # The SAC core as MOPO's (OfflineRL-Kit run_example/run_mopo.py), so the two compare fairly.
    actor_lr: float = 1e-4
    alpha_lr: float = 1e-4
    cosine_actor_lr: bool = True
    # mjrl v2 projects/morel/configs/d4rl_hopper_medium.txt: pessimism_coef 3.0, truncate_reward 0.0.
    pessimism_coef: float | None = 3.0
    halt_penalty: float = 0.0
    uncertainty_feature: str = MAX_PAIRWISE_DISAGREEMENT

    def halt_threshold(self, disagreement_max: float) -> float:
        """USAD's threshold, max_D disc / pessimism_coef; None or a coefficient ≤ 0 turns pessimism off.
        (A model-based setup also halts rollouts with it: any learner config with this method gets halting.)"""
        if self.pessimism_coef is None or self.pessimism_coef <= 0:
            return float("inf")
        return disagreement_max / self.pessimism_coef


def halt_unknown(batch: Batch, unknown: torch.Tensor, halt_penalty: float) -> Batch:
    """Send unknown rows to the absorbing HALT state: reward r̂ − κ, terminal."""
    rewards = batch.rewards - halt_penalty * unknown.to(batch.rewards.dtype)
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
        if config.cosine_actor_lr:
            self.schedulers["actor"] = cosine_actor_schedule(self.optimizers["actor"], context)

    def unknown(self, batch: Batch) -> torch.Tensor:
        return batch.synthetic_mask & (batch.uncertainty[self.config.uncertainty_feature] > self.threshold)

    def transform_batch(self, batch: Batch) -> Batch:
        if batch.synthetic is None:
            return batch
        return halt_unknown(batch, self.unknown(batch), self.config.halt_penalty)

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        metrics = super().update(batch)
        for scheduler in self.schedulers.values():
            scheduler.step()
        if batch.synthetic is not None:
            unknown = self.unknown(batch).float()
            # halt_fraction: the share of MODEL rows that hit HALT (real rows never do).
            metrics["halt_fraction"] = synthetic_mean(unknown, batch.synthetic)
            metrics.update(model_reward_metrics(batch, self.config.halt_penalty * unknown))
        return metrics
