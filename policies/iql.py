"""Implicit Q-Learning (Kostrikov, Nair & Levine 2022).

    value:  L_V = E[ |τ - 1(u < 0)| u² ],   u = min_e Q̄_e(s,a) - V(s)           (expectile regression, τ = 0.7)
    critic: L_Q = Σ_e E[(Q_e(s,a) - r - γ (1 - d) V(s'))²]
    actor:  L_π = -E[ min(exp(β (min_e Q̄_e(s,a) - V(s))), 100) log π(a|s) ]     (β = 3)

Defaults: ikostrikov/implicit_q_learning ``configs/mujoco_config.py`` and
``train_offline.py`` (2x256 networks, lr 3e-4, cosine decay of the actor lr over
the run, locomotion rewards scaled by 1000 / (max - min episode return)); the
actor is a Gaussian with tanh'd mean and a state-independent log-std clipped to
[-5, 2] (official ``learner.py``'s ``log_std_min=-5.0``; ``NormalTanhPolicy(state_dependent_std=False,
tanh_squash_distribution=False)``). Like CORL, all three losses use the
parameters from before this step (V(s') and the advantages are computed before
V moves), so they are stepped together from one backward.
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
    return_range_reward_scale,
    soft_update,
    td_loss,
    td_target,
    with_target,
)
from policies.networks import CriticEnsemble, GaussianActor, gaussian_log_prob


@dataclass
class IQLConfig(LearnerConfig):
    hidden_sizes: tuple[int, ...] = (256, 256)
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    value_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    expectile: float = 0.7  # τ for locomotion (0.9 for AntMaze); a library default of 0.5 is a known trap
    beta: float = 3.0  # inverse temperature ("temperature" in the official config)
    max_weight: float = 100.0  # exp-advantage clip
    cosine_actor_lr: bool = True
    scale_rewards_by_return_range: bool = True  # r * 1000 / (max - min episode return), locomotion
    # The official learner builds its policy with log_std_min=-5.0 (implicit_q_learning learner.py,
    # ``NormalTanhPolicy(..., log_std_min=-5.0, ...)``); -10 is only policy.py's module default.
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    normalize_observations: bool = True  # CORL's IQL normalizes states


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """E[ |τ - 1(u < 0)| u² ]: an asymmetric L2 whose minimizer is the τ-expectile."""
    weight = torch.where(diff > 0, expectile, 1.0 - expectile)
    return (weight * diff.pow(2)).mean()


class IQL(LearnerBase):
    config: IQLConfig

    def __init__(self, config: IQLConfig, context: LearnerContext) -> None:
        super().__init__(config, context)
        hidden = config.hidden_sizes
        self.nets.update(with_target("critic", CriticEnsemble(context.obs_dim, context.act_dim, hidden, members=2)))
        self.nets["value"] = CriticEnsemble(context.obs_dim, 0, hidden, members=1)
        log_std_bounds = (config.log_std_min, config.log_std_max)
        self.nets["actor"] = GaussianActor(
            context.obs_dim, context.act_dim, hidden, tanh_mean=True, log_std_bounds=log_std_bounds
        )
        self.finish_setup()
        self.reward_scale = return_range_reward_scale(context, "iql") if config.scale_rewards_by_return_range else 1.0
        self.optimizers = {
            "actor": adam(self.nets["actor"], config.actor_lr),
            "critic": adam(self.nets["critic"], config.critic_lr),
            "value": adam(self.nets["value"], config.value_lr),
        }
        if config.cosine_actor_lr:
            self.schedulers["actor"] = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizers["actor"], T_max=max(1, context.total_steps)
            )

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.updates += 1
        config = self.config
        observations, actions, next_observations = self.inputs(batch)
        with torch.no_grad():
            target_q = self.nets["critic_target"](observations, actions).min(0).values
            next_v = self.nets["value"](next_observations)[0]
            q_target = td_target(batch.rewards * self.reward_scale, batch.terminals, next_v, config.gamma)

        advantage = target_q - self.nets["value"](observations)[0]
        value_loss = expectile_loss(advantage, config.expectile)

        q = self.nets["critic"](observations, actions)
        critic_loss = td_loss(q, q_target)

        mean, log_std = self.nets["actor"](observations)
        weights = advantage_weights(advantage.detach(), config.beta, config.max_weight)
        actor_loss = -(weights * gaussian_log_prob(actions, mean, log_std)).mean()

        self.step({"value": value_loss, "critic": critic_loss, "actor": actor_loss})
        for scheduler in self.schedulers.values():
            scheduler.step()
        soft_update(self.nets["critic_target"], self.nets["critic"], config.tau)
        return {
            "value_loss": value_loss.detach(),
            "critic_loss": critic_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "advantage_mean": advantage.detach().mean(),
            "q_mean": q.detach().mean(),
        }

    def policy_actions(self, observations: torch.Tensor, deterministic: bool) -> torch.Tensor:
        mean, log_std = self.nets["actor"](observations)
        return mean if deterministic else mean + torch.randn_like(mean) * log_std.exp()
