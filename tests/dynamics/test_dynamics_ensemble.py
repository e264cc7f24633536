"""The batched ensemble, its losses, the holdout split, the batch order, snapshots/early stopping and elites."""

from __future__ import annotations

import math

import pytest
import torch

from dynamics import datamodule
from dynamics.config import DynamicsConfig, make_dynamics_config
from dynamics.datamodule import MemberOrder, TrainBlocks, make_split, segment_ids
from dynamics.ensemble import GaussianEnsemble, gaussian_nll, member_mse
from dynamics.lightning_module import SnapshotTracker, select_elites
from mbrl_core.errors import ConfigError


def small_ensemble(**kwargs) -> GaussianEnsemble:
    options = dict(
        input_dim=4, target_dim=3, ensemble_size=3, hidden_dim=8, hidden_layers=2, weight_decays=(1e-3, 2e-3, 3e-3)
    )
    return GaussianEnsemble(**{**options, **kwargs})


def test_batched_forward_equals_each_member_computed_alone():
    torch.manual_seed(0)
    ensemble = small_ensemble()
    ensemble.set_input_normalization(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([2.0, 1.0, 0.5, 4.0]))
    x = torch.randn(5, 4)
    out = ensemble(x)
    for member in range(3):
        h = (x - ensemble.input_mean) / ensemble.input_std
        for layer in range(3):
            h = h @ ensemble.weights[layer][member] + ensemble.biases[layer][member]
            h = torch.nn.functional.silu(h) if layer < 2 else h
        torch.testing.assert_close(out.mean[member], h[:, :3])
    per_member_inputs = x.expand(3, 5, 4)
    torch.testing.assert_close(ensemble(per_member_inputs).mean, out.mean)


def test_log_variance_is_softly_bounded():
    ensemble = small_ensemble(max_logvar_init=0.5, min_logvar_init=-10.0)
    with torch.no_grad():
        ensemble.biases[-1][..., 3:] = torch.tensor([100.0, -100.0, 0.0])
    logvar = ensemble(torch.zeros(2, 4)).logvar
    assert torch.allclose(logvar[..., 0], torch.tensor(0.5), atol=1e-4)
    assert torch.allclose(logvar[..., 1], torch.tensor(-10.0), atol=1e-4)
    expected = -10.0 + math.log1p(math.exp(0.5 - math.log1p(math.exp(0.5)) + 10.0))
    assert torch.allclose(logvar[..., 2], torch.tensor(expected), atol=1e-5)


def test_losses_equal_hand_computations():
    mean = torch.tensor([[[1.0, 2.0]], [[0.0, 0.0]]])
    logvar = torch.tensor([[[0.0, math.log(4.0)]], [[0.0, 0.0]]])
    target = torch.tensor([[3.0, 2.0]])
    # member 0: ((1-3)^2 / 1 + 0 + 0 / 4 + log 4) / 2 ; member 1: (9 + 4) / 2
    torch.testing.assert_close(gaussian_nll(mean, logvar, target), torch.tensor([(4.0 + math.log(4.0)) / 2, 6.5]))
    torch.testing.assert_close(member_mse(mean, target), torch.tensor([2.0, 6.5]))
    ensemble = small_ensemble()
    with torch.no_grad():
        for weight in ensemble.weights:
            weight.fill_(1.0)
    sizes = [4 * 8, 8 * 8, 8 * 6]  # the last layer outputs mean and log-variance
    expected = sum(decay * 3 * n / 2 for decay, n in zip((1e-3, 2e-3, 3e-3), sizes))
    assert ensemble.weight_decay_loss().item() == pytest.approx(expected)
    assert ensemble.logvar_bound_loss(0.01).item() == pytest.approx(0.01 * 3 * (0.5 + 10.0))


def test_member_snapshot_round_trip_touches_only_that_member():
    torch.manual_seed(0)
    ensemble = small_ensemble()
    saved = ensemble.member_state(1)
    before = ensemble(torch.ones(1, 4)).mean.detach().clone()
    with torch.no_grad():
        for weight in ensemble.weights:
            weight.add_(1.0)
    ensemble.load_member_state(1, saved)
    after = ensemble(torch.ones(1, 4)).mean.detach()
    torch.testing.assert_close(after[1], before[1])
    assert not torch.allclose(after[0], before[0])


def test_snapshot_tracker_keeps_improvements_over_one_percent_and_stops_after_more_than_patience():
    tracker = SnapshotTracker(ensemble_size=2, threshold=0.01, patience=3)
    assert tracker.update(0, [1.0, 1.0]) == [0, 1]
    assert tracker.update(1, [0.98, 0.995]) == [0]  # 2% improves, 0.5% does not
    assert tracker.best == [0.98, 1.0] and tracker.best_epoch == [1, 0]
    assert tracker.update(2, [0.975, 0.991]) == []  # 0.5% and 0.9% of the best so far
    assert tracker.update(3, [0.99, 1.2]) == []
    assert tracker.update(4, [0.972, 0.992]) == [] and not tracker.should_stop  # patience epochs: MOPO goes on
    assert tracker.update(5, [0.973, 0.993]) == [] and tracker.should_stop  # the (patience + 1)-th stops
    assert tracker.update(6, [0.5, 0.995]) == [0] and not tracker.should_stop


def test_elites_are_the_lowest_holdout_mse():
    assert select_elites([0.3, 0.1, 0.5, 0.2, 0.4], 3) == [1, 3, 0]


def test_each_member_sees_its_own_shuffled_bootstrap_and_every_pass_reshuffles():
    order = MemberOrder(n_rows=100, ensemble_size=3, bootstrap=True, seed=0)
    first, second = order.next_epoch(), order.next_epoch()
    assert first.shape == (3, 100)
    assert not torch.equal(first[0], first[1])  # different resamples per member
    assert torch.equal(first.sort(dim=1).values, second.sort(dim=1).values)  # same resample ...
    assert not torch.equal(first, second)  # ... in a new order
    assert len(set(first[0].tolist())) < 100  # drawn with replacement
    plain = MemberOrder(100, 3, bootstrap=False, seed=0).next_epoch()
    assert all(sorted(row.tolist()) == list(range(100)) for row in plain)


def test_blocks_hand_out_the_epoch_order_batch_by_batch(linear_episodes):
    """Blocks of full batches, the short last batch alone; every row of the epoch order exactly once."""
    split = make_split(linear_episodes, DynamicsConfig(max_holdout=100), torch.Generator().manual_seed(0))
    n = split.train_inputs.shape[0]
    blocks = TrainBlocks(split, MemberOrder(n, 3, bootstrap=True, seed=0), batch_size=32, steps_per_block=4)
    expected_rows = MemberOrder(n, 3, bootstrap=True, seed=0).next_epoch()
    handed = list(blocks)
    assert n == 900 and len(handed) == len(blocks) == 8  # 28 full batches of 32 in blocks of 4, then 4 rows
    assert [block.steps for block in handed] == [4] * 7 + [1] and handed[-1].inputs.shape[2] == 4
    inputs = torch.cat([block.inputs[step] for block in handed for step in range(block.steps)], dim=1)
    torch.testing.assert_close(inputs, split.train_inputs[expected_rows], rtol=0, atol=0)
    assert handed[0].targets.shape == (4, 3, 32, split.train_targets.shape[1])


def test_holdout_is_capped_and_made_of_contiguous_episode_segments(linear_episodes):
    config = DynamicsConfig(max_holdout=120, holdout_segment=10)
    split = make_split(linear_episodes, config, torch.Generator().manual_seed(0))
    assert split.holdout_inputs.shape[0] == 120 and split.train_inputs.shape[0] == len(linear_episodes) - 120
    starts, lengths = split.holdout_segment_starts, split.holdout_segment_lengths
    assert int(lengths.sum()) == 120 and int(lengths.max()) <= 10
    for start, length in zip(starts.tolist(), lengths.tolist()):
        s = split.obs_dim
        # consecutive rows of a segment chain: next obs of one row = obs of the following row
        following = split.holdout_inputs[start + 1 : start + length, :s]
        chained = (
            split.holdout_inputs[start : start + length - 1, :s] + split.holdout_targets[start : start + length - 1, :s]
        )
        torch.testing.assert_close(following, chained)
    all_inputs = torch.cat([split.train_inputs, split.holdout_inputs])
    assert torch.unique(all_inputs, dim=0).shape[0] == len(linear_episodes)
    ratio_split = make_split(linear_episodes, DynamicsConfig(), torch.Generator().manual_seed(0))
    assert ratio_split.holdout_inputs.shape[0] == min(int(0.2 * len(linear_episodes)), 1000)


def test_segments_restart_at_each_episode():
    starts = torch.tensor([1, 0, 0, 0, 0, 1, 0, 0, 1, 0], dtype=torch.float32)
    assert segment_ids(starts, 3).tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]


def test_config_defaults_match_mopo_and_bad_values_are_refused():
    config = make_dynamics_config(None)
    assert (config.ensemble_size, config.elites, config.hidden_dim, config.hidden_layers) == (7, 5, 200, 4)
    assert config.weight_decays == [2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4]
    assert (config.learning_rate, config.batch_size, config.max_holdout, config.patience) == (1e-3, 256, 1000, 5)
    assert make_dynamics_config({"weight_decays": ["1e-5"] * 5}).weight_decays == [1e-5] * 5
    with pytest.raises(ConfigError, match="weight_decays has 5 values but 2 hidden layers need 3"):
        make_dynamics_config({"hidden_layers": 2})
    with pytest.raises(ConfigError, match="unknown key"):
        make_dynamics_config({"members": 3})
    with pytest.raises(ConfigError, match="termination must be one of"):
        make_dynamics_config({"termination": "sometimes"})
    assert config.precision == "32" and make_dynamics_config({"precision": "bf16"}).precision == "bf16"
    with pytest.raises(ConfigError, match="precision must be one of 32, bf16, got 'fp8'"):
        make_dynamics_config({"precision": "fp8"})
    assert config.max_fit_minutes is None  # the sources have no time cap; max_epochs is the safety bound
    with pytest.raises(ConfigError, match="max_fit_minutes must be positive"):
        make_dynamics_config({"max_fit_minutes": 0})


@pytest.fixture(scope="module")
def linear_episodes():
    from tests.dynamics.test_dynamics_service import linear_system_data

    return linear_system_data(transitions=1000, episode_length=37)


@pytest.mark.parametrize("n_rows", [900, 896, 870])
def test_under_ddp_every_rank_steps_alike_and_ranks_share_the_epoch(n_rows, monkeypatch):
    """Rank r takes every world-th batch; each rank's blocks hold as many steps as every other rank's
    (DDP all-reduces at every step: a rank stepping alone would hang), the short last batch alone."""
    order = MemberOrder(n_rows, 2, bootstrap=False, seed=0)
    per_rank = []
    for rank in (0, 1):
        monkeypatch.setattr(datamodule, "rank_and_world", lambda rank=rank: (rank, 2))
        per_rank.append(TrainBlocks(None, order, batch_size=32, steps_per_block=4).block_batch_ids())
    assert [len(block) for block in per_rank[0]] == [len(block) for block in per_rank[1]]
    handed = sorted(b for blocks in per_rank for block in blocks for b in block)
    assert handed == list(range(len(handed))) and len(handed) == -(-n_rows // 32) // 2 * 2
