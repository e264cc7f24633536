"""TD3+BC (Fujimoto & Gu 2021): TD3 whose actor also imitates the data.

    critic: L_Q = Σ_e E[(Q_e(s,a) - r - γ (1 - d) min_e Q̄_e(s', clip(π̄(s') + clip(ε, -c, c), -1, 1)))²],  ε ~ N(0, σ²)
    actor:  L_π = -λ E[Q_1(s, π(s))] + E[(π(s) - a)²],   λ = α / E|Q_1(s, π(s))|  (detached)

every ``policy_freq`` critic steps, followed by the Polyak update of the target
actor and critics. Defaults: sfujim/TD3_BC ``main.py`` (α 2.5, σ 0.2, c 0.5,
policy_freq 2, lr 3e-4, 2x256 networks, states normalized with std + 1e-3).
The actor step uses the critic just updated, as in the original code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from mbrl_core.batch import Batch
from mbrl_core.learner import LearnerContext
from policies.base import LearnerBase, LearnerConfig, adam, soft_update, td_loss, td_target, with_target
from policies.networks import CriticEnsemble, DeterministicActor


@dataclass
class TD3BCConfig(LearnerConfig):
    hidden_sizes: tuple[int, ...] = (256, 256)
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    alpha: float = 2.5
    policy_noise: float = 0.2  # in units of max_action (the unit box here)
    noise_clip: float = 0.5
    policy_freq: int = 2
    normalize_observations: bool = True


def bc_lambda(q_policy: torch.Tensor, alpha: float) -> torch.Tensor:
    """λ = α / mean |Q(s, π(s))|, detached so it only rescales the Q term."""
    return alpha / q_policy.abs().mean().detach()


class TD3BC(LearnerBase):
    config: TD3BCConfig

    def __init__(self, config: TD3BCConfig, context: LearnerContext) -> None:
        super().__init__(config, context)
        hidden = config.hidden_sizes
        self.nets.update(with_target("actor", DeterministicActor(context.obs_dim, context.act_dim, hidden)))
        self.nets.update(with_target("critic", CriticEnsemble(context.obs_dim, context.act_dim, hidden, members=2)))
        self.finish_setup()
        self.optimizers = {
            "actor": adam(self.nets["actor"], config.actor_lr),
            "critic": adam(self.nets["critic"], config.critic_lr),
        }
        self.actor_metrics: dict[str, torch.Tensor] = {}

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.updates += 1
        config = self.config
        observations, actions, next_observations = self.inputs(batch)
        with torch.no_grad():
            noise = (torch.randn_like(actions) * config.policy_noise).clamp(-config.noise_clip, config.noise_clip)
            next_actions = (self.nets["actor_target"](next_observations) + noise).clamp(-1.0, 1.0)
            next_q = self.nets["critic_target"](next_observations, next_actions).min(0).values
            target = td_target(batch.rewards, batch.terminals, next_q, config.gamma)
        q = self.nets["critic"](observations, actions)
        critic_loss = td_loss(q, target)
        self.step({"critic": critic_loss})

        if self.updates % config.policy_freq == 0:
            self.actor_metrics = self.update_actor(observations, actions)
        return {"critic_loss": critic_loss.detach(), "q_mean": q.detach().mean(), **self.actor_metrics}

    def update_actor(self, observations: torch.Tensor, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        policy_actions = self.nets["actor"](observations)
        q1 = self.nets["critic"](observations, policy_actions, frozen=True, members=1)[0]
        lam = bc_lambda(q1, self.config.alpha)
        bc_loss = F.mse_loss(policy_actions, actions)
        actor_loss = -lam * q1.mean() + bc_loss
        self.step({"actor": actor_loss})
        soft_update(self.nets["critic_target"], self.nets["critic"], self.config.tau)
        soft_update(self.nets["actor_target"], self.nets["actor"], self.config.tau)
        return {"actor_loss": actor_loss.detach(), "bc_loss": bc_loss.detach(), "lambda": lam}

    def policy_actions(self, observations: torch.Tensor, deterministic: bool) -> torch.Tensor:
        return self.nets["actor"](observations)
