"""Evaluation in the dataset's recovered environment."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mbrl_core.evaluation import Evaluator
from workflows.embedded import CONTROLLER_GAINS


def controller(obs: torch.Tensor) -> torch.Tensor:
    return (obs.double() @ torch.as_tensor(CONTROLLER_GAINS)).float().unsqueeze(-1).clamp(-3, 3)


def test_scripted_controller_reaches_the_reference_max(small_data):
    evaluator = Evaluator(small_data.info, episodes=3, seed=0)
    result = evaluator(controller, step=7)
    evaluator.close()
    assert result.step == 7 and result.episodes == 3
    assert result.returns == [1000.0, 1000.0, 1000.0] and result.lengths == [1000, 1000, 1000]
    assert result.normalized_score == pytest.approx(100.0, abs=0.1)


def test_zero_policy_scores_low_and_evaluation_is_seeded(small_data):
    evaluator = Evaluator(small_data.info, episodes=4, seed=5)

    def zero(obs):
        return torch.zeros(obs.shape[0], 1)

    first, second = evaluator(zero), evaluator(zero)
    evaluator.close()
    assert first.returns == second.returns
    assert first.normalized_score < 5 and np.mean(first.lengths) < 100


def test_no_reference_scores_gives_return_only(small_data):
    from dataclasses import replace

    info = replace(small_data.info, ref_min_score=None, ref_max_score=None)
    evaluator = Evaluator(info, episodes=1)
    assert evaluator(controller).normalized_score is None
    evaluator.close()
