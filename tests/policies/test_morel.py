"""MOReL's pessimism: the USAD threshold as mjrl v2 computes it, and the HALT transition."""

from __future__ import annotations

import math

import pytest
import torch

from dynamics.uncertainty import max_pairwise_disagreement
from mbrl_core.batch import Batch
from mbrl_core.learner import LearnerContext
from mbrl_core.normalization import Normalizer
from policies.morel import MOReL, MOReLConfig

OBS_DIM, ACT_DIM = 2, 1

# Three members' next-state predictions for four dataset (s, a): 3-4-5 triangles keep the distances exact.
PREDICTIONS = torch.tensor(
    [
        [[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [2.0, 0.0]],
        [[3.0, 4.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]],
        [[0.0, 4.0], [0.0, 0.0], [1.0, 1.0], [2.0, 0.5]],
    ]
)
# Row 0: |m0-m1| = 5, |m0-m2| = 4, |m1-m2| = 3 -> 5. Row 1: 1. Row 2: members agree. Row 3: 0.5.
DISAGREEMENT_TABLE = [5.0, 1.0, 0.0, 0.5]


def context(disagreement_max: float) -> LearnerContext:
    return LearnerContext(
        obs_dim=OBS_DIM,
        act_dim=ACT_DIM,
        action_low=-torch.ones(ACT_DIM),
        action_high=torch.ones(ACT_DIM),
        observation_normalizer=Normalizer(torch.zeros(OBS_DIM), torch.ones(OBS_DIM)),
        total_steps=100,
        device=torch.device("cpu"),
        extras={"disagreement_max": disagreement_max},
    )


def morel(pessimism_coef: float | None, halt_penalty: float = 0.0, disagreement_max: float = 5.0) -> MOReL:
    config = MOReLConfig(hidden_sizes=(16, 16), pessimism_coef=pessimism_coef, halt_penalty=halt_penalty)
    return MOReL(config, context(disagreement_max))


def model_batch(disagreement: list[float], synthetic: list[bool], rewards: list[float] | None = None) -> Batch:
    rows = len(disagreement)
    return Batch(
        observations=torch.zeros(rows, OBS_DIM),
        actions=torch.zeros(rows, ACT_DIM),
        rewards=torch.tensor(rewards if rewards is not None else [1.0] * rows),
        next_observations=torch.zeros(rows, OBS_DIM),
        terminals=torch.zeros(rows),
        synthetic=torch.tensor(synthetic),
        uncertainty={"max_pairwise_disagreement": torch.tensor(disagreement)},
    )


def test_threshold_is_the_dataset_maximum_divided_by_the_coefficient():
    # The disagreement of each dataset (s, a): max over member pairs of the L2 gap of the predicted next states.
    table = max_pairwise_disagreement(PREDICTIONS)
    assert table.tolist() == pytest.approx(DISAGREEMENT_TABLE)
    # mjrl v2 run_morel.py: truncate_lim = (1.0 / pessimism_coef) * np.max(delta); hopper-medium uses 3.0.
    learner = morel(pessimism_coef=3.0, disagreement_max=float(table.max()))
    assert learner.threshold == pytest.approx(5.0 / 3.0)
    # A larger coefficient is MORE pessimism: a lower threshold.
    stricter = morel(pessimism_coef=10.0)
    assert stricter.threshold == pytest.approx(0.5) and stricter.threshold < learner.threshold
    assert morel(pessimism_coef=0.5).threshold == pytest.approx(10.0)


@pytest.mark.parametrize("coefficient", [None, 0.0, -1.0])
def test_no_coefficient_means_no_pessimism(coefficient):
    learner = morel(pessimism_coef=coefficient)
    assert math.isinf(learner.threshold)
    assert not learner.unknown(model_batch([1e9], [True])).any()


def test_unknown_rows_are_model_rows_above_the_threshold():
    learner = morel(pessimism_coef=3.0)  # threshold 5/3
    batch = model_batch([1.0, 1.6, 1.7, 5.0, 9.0], [True, True, True, True, False])
    assert learner.unknown(batch).tolist() == [False, False, True, True, False]  # the real row never halts


def test_halt_keeps_the_model_reward_minus_kappa_and_ends_the_return():
    batch = model_batch([0.0, 2.0, 9.0], [True, True, False], rewards=[1.0, 3.0, 1.0])
    batch.terminals = torch.tensor([1.0, 0.0, 0.0])
    halted = morel(pessimism_coef=3.0, halt_penalty=7.0).transform_batch(batch)
    # mjrl model_based_npg.py: the first unknown row keeps its reward and truncate_reward (-kappa) is added.
    assert halted.rewards.tolist() == [1.0, -4.0, 1.0]
    assert halted.terminals.tolist() == [1.0, 1.0, 0.0]
    released = morel(pessimism_coef=3.0, halt_penalty=0.0).transform_batch(batch)  # truncate_reward 0.0
    assert released.rewards.tolist() == [1.0, 3.0, 1.0] and released.terminals.tolist() == [1.0, 1.0, 0.0]


def test_update_reports_the_halting_share_of_model_rows_and_the_penalty():
    torch.manual_seed(0)
    learner = morel(pessimism_coef=3.0, halt_penalty=2.0)
    # 4 model rows, one unknown; 1 real row with a large reward that must not enter the model-row means.
    batch = model_batch([0.0, 0.0, 0.0, 4.0, 0.0], [True, True, True, True, False], rewards=[1.0, 2.0, 3.0, 4.0, 100.0])
    metrics = learner.update(batch)
    assert float(metrics["halt_fraction"]) == pytest.approx(0.25)
    assert float(metrics["model_reward_mean"]) == pytest.approx(2.5)
    assert float(metrics["penalty_mean"]) == pytest.approx(0.5)  # kappa on one of four model rows
