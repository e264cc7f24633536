"""Uncertainty features against hand computations."""

from __future__ import annotations

import itertools
import math

import torch

from dynamics.uncertainty import (
    ensemble_std,
    max_pairwise_disagreement,
    max_std_norm,
    uncertainty_features,
)


def test_max_std_norm_is_the_largest_member_std_norm():
    std = torch.tensor([[[3.0, 4.0]], [[1.0, 1.0]], [[0.0, 2.0]]])  # norms 5, sqrt 2, 2
    assert max_std_norm(std).tolist() == [5.0]


def test_max_pairwise_disagreement_matches_a_loop_over_pairs():
    torch.manual_seed(0)
    means = torch.randn(5, 7, 3)
    expected = torch.stack(
        [
            max((means[i, row] - means[j, row]).norm() for i, j in itertools.combinations(range(5), 2))
            for row in range(7)
        ]
    )
    torch.testing.assert_close(max_pairwise_disagreement(means), expected)


def test_disagreement_is_exact_for_nearly_identical_members_far_from_the_origin():
    base = torch.full((2, 1, 4), 1000.0)
    base[1, 0, 0] += 1e-3  # float32 spacing at 1000 is 6e-5: the squared-norm shortcut would lose this
    assert math.isclose(max_pairwise_disagreement(base).item(), 1e-3, rel_tol=0.1)


def test_ensemble_std_is_the_population_std_averaged_over_dims():
    means = torch.tensor([[[0.0, 2.0]], [[2.0, 2.0]]])
    assert ensemble_std(means).tolist() == [0.5]  # dim stds 1 and 0


def test_features_use_the_state_part_for_the_disagreement_only():
    means = torch.tensor([[[0.0, 0.0, 10.0]], [[3.0, 4.0, -10.0]]])  # last dim = reward
    stds = torch.ones(2, 1, 3)
    features = uncertainty_features(means, stds, state_dim=2)
    assert features["max_pairwise_disagreement"].tolist() == [5.0]
    assert math.isclose(features["max_std_norm"].item(), math.sqrt(3), rel_tol=1e-6)
    assert math.isclose(features["ensemble_std"].item(), (1.5 + 2.0 + 10.0) / 3, rel_tol=1e-6)
