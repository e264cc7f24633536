"""Advantage-Weighted Actor-Critic (Nair et al. 2020), offline, as in CORL.

    critic: L_Q = Σ_e E[(Q_e(s,a) - r - γ (1 - d) min_e Q̄_e(s',a'))²],   a' ~ π(·|s')
    actor:  L_π = -E[ min(exp(A(s,a) / λ), 100) log π(a|s) ],   A(s,a) = min_e Q_e(s,a) - min_e Q_e(s, ã),  ã ~ π(·|s)

Defaults: CORL ``configs/offline/awac/*`` (λ = 1/3, lr 3e-4, 3x256 actor and
critics, weights clipped at 100, states normalized). The actor is CORL's
Gaussian: unbounded mean, state-independent log-std clipped to [-20, 2],
samples clipped to the action box. Both losses use the parameters from before
this step, as the AWAC authors' rlkit trainer does (losses first, then the
optimizer steps), so the critic's Q(s,a) forward also gives the advantage.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mbrl_core.batch import Batch
from mbrl_core.learner import LearnerContext
from policies.base import (
    LearnerBase,
    LearnerConfig,
    adam,
    advantage_weights,
    soft_update,
    td_loss,
    td_target,
    with_target,
)
from policies.networks import CriticEnsemble, GaussianActor, gaussian_log_prob


@dataclass
class AWACConfig(LearnerConfig):
    hidden_sizes: tuple[int, ...] = (256, 256, 256)
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    awac_lambda: float = 1.0 / 3.0  # CORL configs: awac_lambda 0.3333 (its code default is 1.0)
    max_weight: float = 100.0
    log_std_min: float = -20.0
    log_std_max: float = 2.0
    normalize_observations: bool = True


class AWAC(LearnerBase):
    config: AWACConfig

    def __init__(self, config: AWACConfig, context: LearnerContext) -> None:
        super().__init__(config, context)
        hidden = config.hidden_sizes
        self.nets.update(with_target("critic", CriticEnsemble(context.obs_dim, context.act_dim, hidden, members=2)))
        log_std_bounds = (config.log_std_min, config.log_std_max)
        self.nets["actor"] = GaussianActor(
            context.obs_dim, context.act_dim, hidden, tanh_mean=False, log_std_bounds=log_std_bounds
        )
        self.finish_setup()
        self.optimizers = {
            "actor": adam(self.nets["actor"], config.actor_lr),
            "critic": adam(self.nets["critic"], config.critic_lr),
        }

    @staticmethod
    def sample(mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
        return (mean + torch.randn_like(mean) * log_std.exp()).clamp(-1.0, 1.0)

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.updates += 1
        config = self.config
        observations, actions, next_observations = self.inputs(batch)
        actor, critic = self.nets["actor"], self.nets["critic"]
        mean, log_std = actor(observations)
        with torch.no_grad():
            next_actions = self.sample(*actor(next_observations))
            next_q = self.nets["critic_target"](next_observations, next_actions).min(0).values
            target = td_target(batch.rewards, batch.terminals, next_q, config.gamma)
            value = critic(observations, self.sample(mean.detach(), log_std.detach())).min(0).values

        q = critic(observations, actions)
        critic_loss = td_loss(q, target)

        advantage = q.detach().min(0).values - value
        weights = advantage_weights(advantage, 1.0 / config.awac_lambda, config.max_weight)
        actor_loss = -(weights * gaussian_log_prob(actions, mean, log_std)).mean()

        self.step({"critic": critic_loss, "actor": actor_loss})
        soft_update(self.nets["critic_target"], critic, config.tau)
        return {
            "critic_loss": critic_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "advantage_mean": advantage.mean(),
            "q_mean": q.detach().mean(),
        }

    def policy_actions(self, observations: torch.Tensor, deterministic: bool) -> torch.Tensor:
        mean, log_std = self.nets["actor"](observations)
        return mean if deterministic else self.sample(mean, log_std)
