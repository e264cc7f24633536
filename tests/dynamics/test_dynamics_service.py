"""DynamicsService end to end on a known linear system: fit quality, uncertainty, reuse, round trips, refusals."""

from __future__ import annotations

import json
import shutil
import threading

import gymnasium as gym
import lightning
import numpy as np
import pytest
import torch

from dynamics import lightning_module
from dynamics.artifacts import ArtifactStore
from dynamics.ensemble import EnsembleOutput
from dynamics.service import DynamicsService
from dynamics.uncertainty import (
    ENSEMBLE_STD,
    MAX_PAIRWISE_DISAGREEMENT,
    MAX_STD_NORM,
)
from mbrl_core.contracts import UNCERTAINTY_FEATURES
from mbrl_core.data import DatasetInfo, TransitionData
from mbrl_core.errors import ArtifactError
from mbrl_core.locks import LockHeld, try_lock

# delta-state noise per dim and reward noise of the linear system
STATE_NOISE = np.array([0.02, 0.05, 0.1])
REWARD_NOISE = 0.05
TINY = {
    "ensemble_size": 3,
    "elites": 2,
    "hidden_dim": 64,
    "hidden_layers": 2,
    "weight_decays": [1e-5, 1e-5, 1e-5],
    "learning_rate": 3e-3,
    "max_epochs": 80,
    "patience": 8,
    "termination": "never",
}


def linear_system_data(
    transitions: int = 6000, obs_dim: int = 3, episode_length: int = 50, seed: int = 0
) -> TransitionData:
    """s' = s + 0.1 (A s + B a) + noise, r = c.s + d a + noise, with per-dim noise scales."""
    rng = np.random.default_rng(seed)
    a_matrix = -0.5 * np.eye(3) + 0.1 * rng.standard_normal((3, 3))
    b_matrix, c, d = rng.standard_normal((3, 1)), rng.standard_normal(3), 0.5
    obs, act, rew, nxt, starts = [], [], [], [], []
    for step in range(transitions):
        if step % episode_length == 0:
            state = rng.standard_normal(3)
        action = rng.uniform(-1, 1, 1)
        following = state + 0.1 * (a_matrix @ state + b_matrix @ action) + STATE_NOISE * rng.standard_normal(3)
        obs.append(state[:obs_dim])
        act.append(action)
        rew.append(c @ state + d * action[0] + REWARD_NOISE * rng.standard_normal())
        nxt.append(following[:obs_dim])
        starts.append(float(step % episode_length == 0))
        state = following
    info = DatasetInfo(
        dataset_id=f"test/linear-{obs_dim}d-v0",
        observation_space=gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32),
        action_space=gym.spaces.Box(-1.0, 1.0, (1,), np.float32),
    )
    tensor = lambda values: torch.as_tensor(np.asarray(values), dtype=torch.float32).contiguous()  # noqa: E731
    zeros = torch.zeros(transitions)
    return TransitionData(
        tensor(obs), tensor(act), tensor(rew), tensor(nxt), zeros, zeros.clone(), tensor(starts), info
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("dynamics-store"))


@pytest.fixture(autouse=True)
def isolated_store(monkeypatch, store):
    monkeypatch.setenv("MBRL_DYNAMICS_STORE", store)


@pytest.fixture(scope="module")
def linear_data() -> TransitionData:
    return linear_system_data()


@pytest.fixture(scope="module")
def trained(linear_data, store) -> DynamicsService:
    return DynamicsService.fit(linear_data, TINY, store=store, progress=False)


@pytest.mark.slow
def test_fits_linear_system_to_noise_floor_and_learns_its_noise(trained, linear_data):
    noise_floor = float(np.mean(np.append(STATE_NOISE, REWARD_NOISE) ** 2))
    assert trained.metrics["holdout_mse_elites"] < 1.3 * noise_floor
    prediction = trained.predict(linear_data.observations[:2000], linear_data.actions[:2000], per_member=True)
    learned_std = prediction.member_stds[trained.elites].mean(dim=(0, 1)).numpy()
    true_std = np.append(STATE_NOISE, REWARD_NOISE)
    np.testing.assert_allclose(learned_std, true_std, rtol=0.35)
    quality = trained.quality["elite_mean"]
    assert 0.6 < quality["within_1_sigma"] < 0.76 and 0.92 < quality["within_2_sigma"] < 0.98


@pytest.mark.slow
def test_uncertainty_is_larger_far_from_the_data(trained, linear_data):
    near = trained.predict(linear_data.observations[:500], linear_data.actions[:500]).uncertainty
    directions = torch.randn(500, 3, generator=torch.Generator().manual_seed(0))
    far_obs = 8.0 * directions / directions.norm(dim=1, keepdim=True)  # 8 data stds away, every direction
    far = trained.predict(far_obs, linear_data.actions[:500]).uncertainty
    assert set(near) == set(UNCERTAINTY_FEATURES)
    # the epistemic features (members disagreeing) grow away from the data, row by row
    for name in (MAX_PAIRWISE_DISAGREEMENT, ENSEMBLE_STD):
        assert far[name].mean() > 5 * near[name].mean(), name
        assert (far[name] > near[name].max()).float().mean() > 0.95, name
    # MOPO's learned std is aleatoric: on this homoscedastic system nothing makes it grow off the data
    # (it extrapolates towards the learned lower bound), so only its range is checked here
    assert bool(torch.isfinite(far[MAX_STD_NORM]).all()) and bool((far[MAX_STD_NORM] > 0).all())
    assert (
        trained.disagreement_stats["max"] >= trained.disagreement_stats["p99"] >= trained.disagreement_stats["mean"] > 0
    )


def test_second_fit_is_a_cache_hit_and_a_changed_config_a_miss(trained, linear_data, store, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("training ran on a cache hit")

    monkeypatch.setattr(lightning_module, "fit_ensemble", no_training)
    again = DynamicsService.fit(linear_data, TINY, store=store, progress=False)
    assert again.was_cached and again.key == trained.key and again.metrics == trained.metrics
    with pytest.raises(AssertionError, match="training ran"):
        DynamicsService.fit(linear_data, {**TINY, "seed": 1}, store=store, progress=False)


def test_round_trip_gives_identical_predictions_and_steps(trained, linear_data, store):
    loaded = DynamicsService.load(trained.key, store=store)
    obs, act = linear_data.observations[:300], linear_data.actions[:300]
    first, second = trained.predict(obs, act), loaded.predict(obs, act)
    assert torch.equal(first.next_observations, second.next_observations) and torch.equal(first.rewards, second.rewards)
    for name in UNCERTAINTY_FEATURES:
        assert torch.equal(first.uncertainty[name], second.uncertainty[name])
    step_a = trained.step(obs, act, torch.Generator().manual_seed(3))
    step_b = loaded.step(obs, act, torch.Generator().manual_seed(3))
    assert torch.equal(step_a.next_observations, step_b.next_observations) and torch.equal(
        step_a.rewards, step_b.rewards
    )
    assert loaded.elites == trained.elites and loaded.metrics["train_seconds"] > 0
    assert loaded.weights_digest == trained.weights_digest  # a run that trained its model resumes with it


def test_step_samples_one_elite_per_row_with_the_same_uncertainty_as_predict(trained, linear_data):
    obs, act = linear_data.observations[:1].expand(4000, -1), linear_data.actions[:1].expand(4000, -1)
    step = trained.step(obs, act, torch.Generator().manual_seed(0))
    prediction = trained.predict(obs[:1], act[:1], per_member=True)
    elite_means = prediction.member_means[trained.elites, 0, :3]
    # every sample is near one of the elites' means (within 5 predicted sigma)
    distance = (
        ((step.next_observations[:, None, :] - elite_means[None]) / prediction.member_stds[trained.elites, 0, :3])
        .abs()
        .amax(-1)
    )
    assert bool((distance.amin(dim=1) < 5).all())
    np.testing.assert_allclose(step.next_observations.mean(0), prediction.next_observations[0], atol=0.01)
    for name in UNCERTAINTY_FEATURES:
        assert torch.allclose(step.uncertainty[name][0], prediction.uncertainty[name][0])
    assert step.terminals.sum() == 0


def test_step_segments_equal_solo_steps_with_each_segments_own_generator(trained, linear_data, monkeypatch):
    sizes, seeds = [1, 7, 33, 59], [5, 0, 5, 12]  # a seed reused by two segments gives each the same draws
    obs, act = linear_data.observations[:100], linear_data.actions[:100]
    starts = np.cumsum([0] + sizes)

    def compare(exact: bool) -> None:
        segments = [(rows, torch.Generator().manual_seed(seed)) for rows, seed in zip(sizes, seeds)]
        batched = trained.step_segments(obs, act, segments)
        for step, start, stop, seed in zip(batched, starts, starts[1:], seeds):
            solo = trained.step(obs[start:stop], act[start:stop], torch.Generator().manual_seed(seed))
            same = torch.equal if exact else lambda a, b: torch.allclose(a, b, atol=1e-6)
            for name in ("next_observations", "rewards", "terminals"):
                assert same(getattr(step, name), getattr(solo, name)), (name, start)
            for name in UNCERTAINTY_FEATURES:
                assert same(step.uncertainty[name], solo.uncertainty[name]), (name, start)

    compare(exact=False)  # the real forward pass: BLAS rounds a row differently with the batch's size
    forward = trained._forward

    def one_row_at_a_time(observations, actions):
        outs = [forward(o, a) for o, a in zip(observations.split(1), actions.split(1))]
        return EnsembleOutput(
            torch.cat([out.mean for out in outs], dim=1), torch.cat([out.logvar for out in outs], dim=1), None
        )

    monkeypatch.setattr(trained, "_forward", one_row_at_a_time)
    compare(exact=True)  # with a batch-invariant forward pass (no terminal head: termination 'never') it is bit for bit
    with pytest.raises(ValueError, match="segments cover 99 rows, the batch has 100"):
        trained.step_segments(obs, act, [(99, torch.Generator())])


def test_a_fit_that_another_process_is_running_is_waited_for_and_reused(trained, linear_data, store, tmp_path, capsys):
    other = ArtifactStore(tmp_path)
    holder = try_lock(other.lock_path(trained.key))  # another process training this very model

    def other_process_publishes():
        shutil.copytree(ArtifactStore(store).path(trained.key), other.path(trained.key))
        holder.release()

    with pytest.raises(LockHeld, match="is being written by process"):
        DynamicsService.fit(linear_data, TINY, store=tmp_path, progress=False)  # the default: refused at once
    threading.Timer(1.0, other_process_publishes).start()
    reused = DynamicsService.fit(linear_data, TINY, store=tmp_path, progress=False, wait_for_other_fit=60)
    assert f"dynamics model {trained.key} is being trained by process" in capsys.readouterr().out
    assert reused.was_cached and reused.weights_digest == trained.weights_digest


def test_tampered_artifact_is_refused(trained, store, tmp_path):
    import shutil

    copy_root = tmp_path / "store"
    shutil.copytree(ArtifactStore(store).path(trained.key), copy_root / trained.key)
    weights = copy_root / trained.key / "weights.pt"
    content = bytearray(weights.read_bytes())
    content[-20] ^= 0xFF
    weights.write_bytes(bytes(content))
    with pytest.raises(ArtifactError, match="corrupted: weights.pt"):
        DynamicsService.load(trained.key, store=copy_root)
    shutil.copy(ArtifactStore(store).path(trained.key) / "weights.pt", weights)
    meta_path = copy_root / trained.key / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["elites"] = [0, 1, 2]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="corrupted: meta.json"):
        DynamicsService.load(trained.key, store=copy_root)


def test_space_mismatch_is_refused(trained):
    other = linear_system_data(transitions=200, obs_dim=2)
    with pytest.raises(
        ArtifactError, match=r"does not fit dataset 'test/linear-2d-v0': observation shape \(3,\) vs \(2,\)"
    ):
        trained.check_compatible(other)


def test_failed_training_leaves_no_artifact(linear_data, tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(lightning_module, "fit_ensemble", crash)
    with pytest.raises(RuntimeError, match="killed"):
        DynamicsService.fit(linear_data, TINY, store=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_logged_holdout_metrics_are_finite(tiny_model):
    """Lightning averages the logged holdout metrics by the validation batch's size (once NaN with an empty
    placeholder batch); the holdout batch is real now, and its metrics must stay finite."""
    import glob

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = glob.glob(f"{tiny_model.path}/**/events.out.tfevents.*", recursive=True)
    assert logs, f"no TensorBoard logs under {tiny_model.path}"
    events = EventAccumulator(logs[0])
    events.Reload()
    values = [scalar.value for scalar in events.Scalars("holdout/mse_mean")]
    assert values and all(np.isfinite(values))


def test_bf16_fit_learns_as_well_as_float32_and_keeps_float32_weights(trained, linear_data, store):
    """bf16 autocast (measured over seeds 0-2: holdout MSE within 0.7% of float32's, seed spread 6%)."""
    bf16 = DynamicsService.fit(linear_data, {**TINY, "precision": "bf16"}, store=store, progress=False)
    assert bf16.key != trained.key  # the precision is part of the stored model's identity
    assert all(parameter.dtype == torch.float32 for parameter in bf16.ensemble.parameters())
    mse, reference = bf16.metrics["holdout_mse_elites"], trained.metrics["holdout_mse_elites"]
    assert abs(mse - reference) <= 0.05 * reference
    prediction = bf16.predict(linear_data.observations[:100], linear_data.actions[:100])
    assert prediction.next_observations.dtype == torch.float32 and prediction.rewards.dtype == torch.float32
    torch.testing.assert_close(
        prediction.next_observations,
        trained.predict(linear_data.observations[:100], linear_data.actions[:100]).next_observations,
        atol=0.05,
        rtol=0,
    )


class StopAfterEpoch(lightning.Callback):
    """Stands for a killed process: fails at the end of epoch ``epoch`` (after its fit checkpoint)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, module) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("interrupted")


QUICK_STOP = {**TINY, "max_epochs": 60, "patience": 2}  # stops early after about a dozen epochs


@pytest.fixture(scope="module")
def straight_fit(linear_data, tmp_path_factory) -> DynamicsService:
    return DynamicsService.fit(linear_data, QUICK_STOP, store=tmp_path_factory.mktemp("straight"), progress=False)


@pytest.mark.parametrize("where", ["early", "last-epoch"])
def test_interrupted_fit_resumes_to_the_weights_of_an_uninterrupted_one(
    straight_fit, linear_data, tmp_path, capsys, where
):
    epochs = straight_fit.metrics["epochs"]
    assert straight_fit.metrics["stopped_early"] and epochs > 4
    interrupted_after = 3 if where == "early" else epochs  # the last: the epoch whose check stopped the fit
    with pytest.raises(RuntimeError, match="interrupted"):
        DynamicsService.fit(
            linear_data, QUICK_STOP, store=tmp_path, progress=False, callbacks=[StopAfterEpoch(interrupted_after - 1)]
        )
    assert not ArtifactStore(tmp_path).keys()
    resumed = DynamicsService.fit(linear_data, QUICK_STOP, store=tmp_path, progress=False)
    assert f"resuming the interrupted fit after epoch {interrupted_after}" in capsys.readouterr().out
    assert resumed.metrics["resumed_after_epoch"] == interrupted_after
    assert resumed.metrics["epochs"] == epochs and resumed.elites == straight_fit.elites
    ours, theirs = resumed.ensemble.state_dict(), straight_fit.ensemble.state_dict()
    assert all(torch.equal(ours[name], theirs[name]) for name in theirs)
    assert resumed.weights_digest == straight_fit.weights_digest
    assert [path.name for path in tmp_path.iterdir()] == [resumed.key]  # the fit checkpoint is gone


@pytest.mark.parametrize("damage", ["truncated", "other-shapes", "retrain"])
def test_unusable_fit_checkpoint_is_named_and_the_fit_starts_again(straight_fit, linear_data, tmp_path, capsys, damage):
    with pytest.raises(RuntimeError, match="interrupted"):
        DynamicsService.fit(linear_data, QUICK_STOP, store=tmp_path, progress=False, callbacks=[StopAfterEpoch(1)])
    checkpoint = ArtifactStore(tmp_path).fit_checkpoint(straight_fit.key)
    if damage == "truncated":
        checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    elif damage == "other-shapes":
        state = torch.load(checkpoint, weights_only=True)
        state["state_dict"]["ensemble.weights.0"] = torch.zeros(1, 2, 3)
        torch.save(state, checkpoint)
    again = DynamicsService.fit(linear_data, QUICK_STOP, store=tmp_path, progress=False, retrain=damage == "retrain")
    expected = {
        "truncated": "unreadable",
        "other-shapes": "its weights do not match this ensemble",
        "retrain": "a new fit was asked for",
    }[damage]
    out = capsys.readouterr().out
    assert f"not resuming from {checkpoint} ({expected}" in out and "training from the start" in out
    assert again.metrics["resumed_after_epoch"] is None
    ours, theirs = again.ensemble.state_dict(), straight_fit.ensemble.state_dict()
    assert all(torch.equal(ours[name], theirs[name]) for name in theirs)
