"""Each loss against a hand computation on a tiny batch."""

from __future__ import annotations

import math

import pytest
import torch

from mbrl_core.batch import Batch
from mbrl_core.learner import LearnerContext
from mbrl_core.normalization import Normalizer
from policies.base import advantage_weights, td_target
from policies.cql import conservative_logsumexp
from policies.iql import expectile_loss
from policies.networks import SquashedGaussian
from policies.sac import SAC, SACConfig
from policies.td3bc import bc_lambda


def test_expectile_loss_weights_positive_errors_by_tau():
    diff = torch.tensor([2.0, -1.0, 0.5, -3.0])
    # |0.7 - 1(u<0)| u^2 = 0.7*4, 0.3*1, 0.7*0.25, 0.3*9
    expected = (0.7 * 4 + 0.3 * 1 + 0.7 * 0.25 + 0.3 * 9) / 4
    assert expectile_loss(diff, 0.7).item() == pytest.approx(expected)
    assert expectile_loss(diff, 0.5).item() == pytest.approx(0.5 * (4 + 1 + 0.25 + 9) / 4)


def test_advantage_weights_exponentiate_and_clip_at_100():
    advantages = torch.tensor([0.0, 1.0, 2.0, 10.0, -1.0])
    weights = advantage_weights(advantages, inverse_temperature=3.0, max_weight=100.0)
    expected = [1.0, math.exp(3.0), 100.0, 100.0, math.exp(-3.0)]  # exp(6) = 403 is clipped
    assert weights.tolist() == pytest.approx(expected, rel=1e-6)
    # AWAC's exp(A / λ) with λ = 1/3 is the same weight.
    assert advantage_weights(advantages, 1.0 / (1.0 / 3.0), 100.0).tolist() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_cql_logsumexp_is_importance_sampled_with_log_density_corrections(temperature):
    act_dim = 2
    q_random, q_current, q_next = [1.0, 2.0], [0.5, 0.0], [1.5, -1.0]
    log_pi_current, log_pi_next = [-1.0, -2.0], [0.3, -0.2]
    uniform = act_dim * math.log(0.5)  # log density of U[-1,1]^2
    terms = [q - uniform for q in q_random]
    terms += [q - lp for q, lp in zip(q_next, log_pi_next)]
    terms += [q - lp for q, lp in zip(q_current, log_pi_current)]
    expected = temperature * math.log(sum(math.exp(t / temperature) for t in terms))

    def t(values):  # one state, K = 2
        return torch.tensor([values])

    value = conservative_logsumexp(
        t(q_random), t(q_current), t(q_next), t(log_pi_current), t(log_pi_next), act_dim, temperature
    )
    assert value.shape == (1,)
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_td3bc_lambda_is_alpha_over_mean_abs_q_and_detached():
    q = torch.tensor([1.0, -3.0, 2.0], requires_grad=True)
    lam = bc_lambda(q, alpha=2.5)
    assert lam.item() == pytest.approx(2.5 / 2.0)
    assert not lam.requires_grad
    (-lam * q.mean()).backward()
    assert q.grad.tolist() == pytest.approx([-1.25 / 3] * 3)  # no gradient through λ


def test_td_target_stops_bootstrapping_only_at_terminals():
    rewards = torch.tensor([1.0, 1.0, 1.0])
    terminals = torch.tensor([0.0, 1.0, 0.0])  # row 2 is a terminal; row 3 a timeout (terminal 0)
    next_values = torch.tensor([10.0, 10.0, 10.0])
    assert td_target(rewards, terminals, next_values, 0.99).tolist() == pytest.approx([10.9, 1.0, 10.9])


def test_squashed_gaussian_log_prob_matches_change_of_variables():
    mean, log_std = torch.tensor([[0.3, -0.2]]), torch.tensor([[-0.5, 0.1]])
    actions = torch.tensor([[0.4, -0.7]])
    pre = torch.atanh(actions)
    normal = torch.distributions.Normal(mean, log_std.exp())
    expected = (normal.log_prob(pre) - torch.log(1 - actions.pow(2))).sum(-1)
    assert SquashedGaussian(mean, log_std).log_prob(actions).item() == pytest.approx(expected.item(), rel=1e-5)


def tiny_context(obs_dim: int = 3, act_dim: int = 2) -> LearnerContext:
    return LearnerContext(
        obs_dim=obs_dim,
        act_dim=act_dim,
        action_low=-torch.ones(act_dim),
        action_high=torch.ones(act_dim),
        observation_normalizer=Normalizer.identity(obs_dim),
        total_steps=100,
        device=torch.device("cpu"),
        episode_return_min=0.0,
        episode_return_max=10.0,
    )


def test_sac_critic_target_bootstraps_timeouts_but_not_terminals():
    torch.manual_seed(0)
    learner = SAC(SACConfig(backup_entropy=False), tiny_context())
    next_observations = torch.randn(2, 3)
    batch = Batch(
        observations=torch.randn(2, 3),
        actions=torch.zeros(2, 2),
        rewards=torch.tensor([0.5, 0.5]),
        next_observations=next_observations,
        terminals=torch.tensor([1.0, 0.0]),  # row 2: a timeout
    )
    policy = SquashedGaussian(torch.zeros(2, 2), torch.full((2, 2), -20.0))  # deterministic a' = 0
    with torch.no_grad():
        target = learner.critic_target(batch, next_observations, policy, torch.tensor(1.0))
        next_q = learner.nets["critic_target"](next_observations, torch.zeros(2, 2)).min(0).values
    assert target[0].item() == pytest.approx(0.5)
    assert target[1].item() == pytest.approx(0.5 + 0.99 * next_q[1].item(), rel=1e-5)


def test_unbounded_action_space_is_refused_with_one_line():
    from mbrl_core.errors import ConfigError

    context = tiny_context()
    context.action_high = torch.tensor([1.0, float("inf")])
    with pytest.raises(ConfigError, match="bounded action box"):
        SAC(SACConfig(), context)


def test_cql_push_up_term_uses_only_the_selected_rows():
    from policies.cql import CQL, CQLConfig

    torch.manual_seed(0)
    learner = CQL(CQLConfig(hidden_sizes=(8,)), tiny_context())
    observations = torch.randn(4, 3)
    policy = SquashedGaussian(torch.zeros(4, 2), torch.zeros(4, 2))
    q_data = torch.arange(8.0).view(2, 4)  # two critics, four rows
    batch = Batch(
        observations,
        torch.zeros(4, 2),
        torch.zeros(4),
        observations,
        torch.zeros(4),
        synthetic=torch.tensor([False, False, True, True]),
    )
    torch.manual_seed(1)
    all_rows, _ = learner.critic_regularizer(batch, observations, q_data, policy, policy)
    learner.push_up_rows = lambda b: ~b.synthetic_mask  # COMBO: only dataset rows are pushed up
    torch.manual_seed(1)
    real_rows, _ = learner.critic_regularizer(batch, observations, q_data, policy, policy)
    # Same sampled actions, so the log-sum-exp is unchanged; each critic's push-up mean drops by 1
    # (rows 0-1 instead of 0-3), and the loss is α_cql Σ_e (lse_e - push_up_e).
    assert (real_rows - all_rows).item() == pytest.approx(10.0 * 2 * 1.0, rel=1e-5)


def test_cql_scales_rewards_by_the_return_range_only_when_asked():
    from policies.cql import CQL, CQLConfig

    batch = Batch(
        observations=torch.randn(4, 3),
        actions=torch.zeros(4, 2),
        rewards=torch.tensor([1.0, -2.0, 0.5, 0.0]),
        next_observations=torch.randn(4, 3),
        terminals=torch.zeros(4),
    )
    plain = CQL(CQLConfig(hidden_sizes=(8,)), tiny_context())
    assert torch.equal(plain.transform_batch(batch).rewards, batch.rewards)
    scaled = CQL(CQLConfig(hidden_sizes=(8,), scale_rewards_by_return_range=True), tiny_context())
    # CORL modify_reward: r * 1000 / (max - min episode return); the returns span 0..10 here.
    assert torch.allclose(scaled.transform_batch(batch).rewards, batch.rewards * 100.0)
