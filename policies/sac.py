"""Soft Actor-Critic (Haarnoja et al. 2018): the core that CQL, MOPO and COMBO build on, and the plain "sac" learner.

    critic:  L_Q  = Σ_e E[(Q_e(s,a) - y)^2],   y = r + γ (1 - d) (min_e Q̄_e(s',a') - α log π(a'|s')),  a' ~ π(·|s')
    actor:   L_π  = E[α log π(ã|s) - min_e Q_e(s,ã)],  ã ~ π(·|s)
    entropy: L_α  = -E[log α (log π(ã|s) + H̄)],        H̄ = -act_dim

All three losses are computed from the same parameters and stepped together
(softlearning, which MOPO builds on, and rlkit do the same). Their gradients
touch disjoint parameters (targets, sampled actions and α are detached where a
loss must not move them), so one backward of their sum equals three backwards.

Subclass hooks: ``transform_batch`` (MOPO's reward penalty), ``critic_regularizer``
(CQL's conservative term) and ``actor_objective`` (CQL's BC warm start).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mbrl_core.batch import Batch
from mbrl_core.learner import LearnerContext
from policies.base import LearnerBase, LearnerConfig, adam, soft_update, td_loss, td_target, with_target
from policies.networks import CriticEnsemble, SquashedGaussian, TanhGaussianActor


@dataclass
class SACConfig(LearnerConfig):
    # 2x256, lr 3e-4 for all, γ 0.99, τ 0.005: Haarnoja et al. 2018 (Table 1); MOPO's SAC (`M = 256`).
    hidden_sizes: tuple[int, ...] = (256, 256)
    critic_members: int = 2
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    init_alpha: float = 1.0
    auto_entropy: bool = True
    # None means the SAC paper's heuristic -act_dim (MOPO sets -3 for 3-D actions: the same value).
    target_entropy: float | None = None
    backup_entropy: bool = True
    normalize_observations: bool = False  # SAC and MOPO's SAC feed raw states


class Temperature(nn.Module):
    """The entropy weight α = exp(log α), learned when auto-entropy is on."""

    def __init__(self, init_alpha: float, learnable: bool) -> None:
        super().__init__()
        self.log_alpha = nn.Parameter(torch.tensor(float(init_alpha)).log(), requires_grad=learnable)

    def forward(self) -> torch.Tensor:
        return self.log_alpha.exp()


class SAC(LearnerBase):
    config: SACConfig

    def __init__(self, config: SACConfig, context: LearnerContext) -> None:
        super().__init__(config, context)
        self.nets.update(with_target("critic", self.build_critic(context)))
        self.nets["actor"] = self.build_actor(context)
        self.nets["temperature"] = Temperature(config.init_alpha, config.auto_entropy)
        self.target_entropy = -float(context.act_dim) if config.target_entropy is None else float(config.target_entropy)
        self.finish_setup()
        self.optimizers = {
            "actor": adam(self.nets["actor"], config.actor_lr),
            "critic": adam(self.nets["critic"], config.critic_lr),
        }
        if config.auto_entropy:
            self.optimizers["temperature"] = adam(self.nets["temperature"], config.alpha_lr)

    # -- construction hooks (CQL changes the actor's log-std offset and the critics' init)
    def build_actor(self, context: LearnerContext) -> nn.Module:
        return TanhGaussianActor(context.obs_dim, context.act_dim, self.config.hidden_sizes)

    def build_critic(self, context: LearnerContext) -> CriticEnsemble:
        return CriticEnsemble(context.obs_dim, context.act_dim, self.config.hidden_sizes, self.config.critic_members)

    # -- the update
    def transform_batch(self, batch: Batch) -> Batch:
        """Change rewards/terminals before the critic target (MOPO subtracts its penalty here)."""
        return batch

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.updates += 1
        batch = self.transform_batch(batch)
        observations, actions, next_observations = self.inputs(batch)
        actor, critic = self.nets["actor"], self.nets["critic"]
        alpha = self.nets["temperature"]()

        policy = actor(observations)
        new_actions, log_pi = policy.rsample()
        with torch.no_grad():
            next_policy = actor(next_observations)
            target = self.critic_target(batch, next_observations, next_policy, alpha)

        q_data = critic(observations, actions)
        critic_loss = td_loss(q_data, target)
        regularizer, metrics = self.critic_regularizer(batch, observations, q_data, policy.detach(), next_policy)
        actor_loss = self.actor_objective(observations, actions, policy, new_actions, log_pi, alpha.detach())
        losses = {"critic": critic_loss + regularizer, "actor": actor_loss}
        if self.config.auto_entropy:
            entropy_gap = log_pi.detach() + self.target_entropy
            losses["temperature"] = -(self.nets["temperature"].log_alpha * entropy_gap).mean()

        self.step(losses)
        soft_update(self.nets["critic_target"], critic, self.config.tau)
        metrics.update(
            critic_loss=critic_loss.detach(),
            actor_loss=actor_loss.detach(),
            alpha=alpha.detach(),
            entropy=-log_pi.detach().mean(),
            q_mean=q_data.detach().mean(),
        )
        return metrics

    def critic_target(
        self, batch: Batch, next_observations: torch.Tensor, next_policy: SquashedGaussian, alpha: torch.Tensor
    ) -> torch.Tensor:
        next_actions, next_log_pi = next_policy.rsample()
        next_q = self.nets["critic_target"](next_observations, next_actions).min(0).values
        if self.config.backup_entropy:
            next_q = next_q - alpha * next_log_pi
        return td_target(batch.rewards, batch.terminals, next_q, self.config.gamma)

    def critic_regularizer(
        self,
        batch: Batch,
        observations: torch.Tensor,
        q_data: torch.Tensor,
        policy: SquashedGaussian,
        next_policy: SquashedGaussian,
    ) -> tuple[torch.Tensor | float, dict[str, torch.Tensor]]:
        """Extra critic loss (none for SAC; CQL's conservative term)."""
        return 0.0, {}

    def actor_objective(
        self,
        observations: torch.Tensor,
        actions: torch.Tensor,
        policy: SquashedGaussian,
        new_actions: torch.Tensor,
        log_pi: torch.Tensor,
        alpha: torch.Tensor,
    ) -> torch.Tensor:
        q_new = self.nets["critic"](observations, new_actions, frozen=True).min(0).values
        return (alpha * log_pi - q_new).mean()

    def policy_actions(self, observations: torch.Tensor, deterministic: bool) -> torch.Tensor:
        policy = self.nets["actor"](observations)
        return policy.mode() if deterministic else policy.rsample()[0]
