"""Conservative Q-Learning, CQL(H) (Kumar et al. 2020), on the SAC core.

    L_Q = SAC critic loss + α_cql Σ_e ( E_{s~ρ}[ log Σ_a exp Q_e(s,a) ] - E_{(s,a)~D}[ Q_e(s,a) ] )

The log-sum-exp over actions is estimated by importance sampling (the official
code's ``min_q_version=3``; CORL's ``cql_importance_sample``) from K actions of
each of three proposals, each corrected by its log-density:
    uniform on [-1,1]^d      Q(s, a_u) - log(0.5^d)
    π(·|s)                   Q(s, a_π) - log π(a_π|s)
    π(·|s')                  Q(s, a'_π) - log π(a'_π|s')     (evaluated at s, as in the official code)
Defaults follow CORL's D4RL configs (see REFERENCES.md): 3x256 actor and critics,
orthogonal critic init, α_cql 10, K 10, temperature 1, policy lr 3e-5,
Q lr 3e-4, auto-entropy with the policy's lr, no entropy in the backup, no
max-target backup, no BC warm start (``bc_steps`` 0), Lagrange variant off, raw
rewards (CORL scales them by 1000 / return range for hopper-medium only: a per-dataset setting).

COMBO subclasses this, changing only ``push_down_rows`` (the states ρ of the
log-sum-exp term) and ``push_up_rows`` (the dataset (s,a) rows pushed up).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from mbrl_core.batch import Batch
from mbrl_core.learner import LearnerContext
from policies.base import return_range_reward_scale
from policies.networks import CriticEnsemble, SquashedGaussian, TanhGaussianActor
from policies.sac import SAC, SACConfig


@dataclass
class CQLConfig(SACConfig):
    # CORL configs/offline/cql/*.yaml and algorithms/offline/cql.py TrainConfig.
    hidden_sizes: tuple[int, ...] = (256, 256, 256)  # q_n_hidden_layers 3; actor 3x256
    actor_lr: float = 3e-5  # policy_lr
    critic_lr: float = 3e-4  # qf_lr
    alpha_lr: float = 3e-5  # CORL's entropy optimizer uses policy_lr
    backup_entropy: bool = False
    normalize_observations: bool = True  # CORL normalize: true
    cql_alpha: float = 10.0
    n_actions: int = 10
    temperature: float = 1.0
    # None: fixed weight α_cql (CORL cql_lagrange False). A number τ: the Lagrange
    # variant, α' tuned so that the conservative gap stays near τ (official: lagrange_thresh).
    lagrange_threshold: float | None = None
    bc_steps: int = 0
    orthogonal_init: bool = True
    log_std_offset: float = -1.0
    # CORL normalize_reward: r x 1000 / (max - min episode return); its hopper/medium_v2.yaml alone sets it.
    scale_rewards_by_return_range: bool = False


def conservative_logsumexp(
    q_random: torch.Tensor,
    q_current: torch.Tensor,
    q_next: torch.Tensor,
    log_pi_current: torch.Tensor,
    log_pi_next: torch.Tensor,
    act_dim: int,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Importance-sampled T·log Σ exp(Q/T) over the three proposals; inputs ``[..., K]``, output ``[...]``."""
    uniform_log_density = act_dim * math.log(0.5)
    weighted = torch.cat([q_random - uniform_log_density, q_next - log_pi_next, q_current - log_pi_current], dim=-1)
    return temperature * torch.logsumexp(weighted / temperature, dim=-1)


class CQL(SAC):
    config: CQLConfig

    def __init__(self, config: CQLConfig, context: LearnerContext) -> None:
        super().__init__(config, context)
        if config.lagrange_threshold is not None:
            # CORL: log α' starts at 1.0 and has its own Adam at the Q learning rate. Here it is a
            # parameter group of the critics' Adam (the same update), so the critic loss term, which
            # carries its dual ascent, steps exactly the parameters it reaches.
            self.log_alpha_prime = nn.Parameter(torch.tensor(1.0, device=self.device))
            self.nets["cql_lagrange"] = nn.ParameterDict({"log_alpha_prime": self.log_alpha_prime})
            self.optimizers["critic"].add_param_group({"params": [self.log_alpha_prime]})
        self.reward_scale = return_range_reward_scale(context, "cql") if config.scale_rewards_by_return_range else 1.0

    def build_actor(self, context: LearnerContext) -> nn.Module:
        return TanhGaussianActor(
            context.obs_dim,
            context.act_dim,
            self.config.hidden_sizes,
            self.config.log_std_offset,
            small_output_init=True,
        )

    def build_critic(self, context: LearnerContext) -> CriticEnsemble:
        config = self.config
        return CriticEnsemble(
            context.obs_dim, context.act_dim, config.hidden_sizes, config.critic_members, config.orthogonal_init
        )

    def transform_batch(self, batch: Batch) -> Batch:
        if self.reward_scale == 1.0:
            return batch
        return replace(batch, rewards=batch.rewards * self.reward_scale)

    def push_down_rows(self, batch: Batch) -> torch.Tensor | None:
        """Rows whose states ρ feed the log-sum-exp term (None: all)."""
        return None

    def push_up_rows(self, batch: Batch) -> torch.Tensor | None:
        """Rows whose dataset (s, a) are pushed up (None: all)."""
        return None

    def critic_regularizer(
        self,
        batch: Batch,
        observations: torch.Tensor,
        q_data: torch.Tensor,
        policy: SquashedGaussian,
        next_policy: SquashedGaussian,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        config = self.config
        down, up = self.push_down_rows(batch), self.push_up_rows(batch)
        if down is not None:
            observations, policy, next_policy = observations[down], policy.rows(down), next_policy.rows(down)
        k = config.n_actions
        with torch.no_grad():
            random_actions = torch.empty(observations.shape[0], k, self.context.act_dim, device=self.device).uniform_(
                -1.0, 1.0
            )
            current_actions, log_pi_current = policy.rsample(k)
            next_actions, log_pi_next = next_policy.rsample(k)
        q = self.nets["critic"](observations, torch.cat([random_actions, current_actions, next_actions], dim=1))
        q_random, q_current, q_next = q.split(k, dim=-1)
        push_down = conservative_logsumexp(
            q_random, q_current, q_next, log_pi_current, log_pi_next, self.context.act_dim, config.temperature
        )
        push_up = q_data if up is None else q_data[:, up]
        gap = push_down.mean(-1) - push_up.mean(-1)  # one per critic
        metrics = {"cql_gap": gap.detach().mean()}
        if config.lagrange_threshold is None:
            return config.cql_alpha * gap.sum(), metrics
        alpha_prime = self.log_alpha_prime.exp().clamp(0.0, 1e6)
        constraint = config.cql_alpha * (gap - config.lagrange_threshold)
        # Critics minimize α'·constraint; α' maximizes it (dual ascent), halved over the two critics as in CORL.
        loss = (alpha_prime.detach() * constraint).sum() - 0.5 * (alpha_prime * constraint.detach()).sum()
        metrics["alpha_prime"] = alpha_prime.detach()
        return loss, metrics

    def actor_objective(
        self,
        observations: torch.Tensor,
        actions: torch.Tensor,
        policy: SquashedGaussian,
        new_actions: torch.Tensor,
        log_pi: torch.Tensor,
        alpha: torch.Tensor,
    ) -> torch.Tensor:
        if self.updates <= self.config.bc_steps:
            # BC warm start (official policy_eval_start / CORL bc_steps): imitate the data, keep the entropy term.
            return (alpha * log_pi - policy.log_prob(actions)).mean()
        return super().actor_objective(observations, actions, policy, new_actions, log_pi, alpha)
