"""MOPO, MOReL and COMBO end to end through the one trainer: they learn, reuse the stored dynamics model,
store their rollouts, and a stored set of rollouts can be replayed with another penalty."""

from __future__ import annotations

import pytest
import torch

from mbrl_core.batch import Batch
from mbrl_core.learner import LearnerContext
from mbrl_core.rollout_store import RolloutStore
from policies.combo import COMBO, COMBOConfig
from tests.conftest import TINY_DYNAMICS
from workflows.runs import read_eval, train_run

# Updates per run: the SAC-based learners need a little longer than COMBO to lift Q off the random policy.
STEPS = {"mopo": 2000, "morel": 2000, "combo": 1500}
REFRESH_EVERY = 250
# Small networks and rollouts so each run takes seconds; refresh cadence at test scale.
SMALL = {
    "trainer": {
        "eval_every": 10_000,
        "eval_episodes": 5,
        "log_every": 500,
        "checkpoint_every": 10_000,
    },  # evaluate at the end
    "rollouts": {"batch_size": 1000, "refresh_every": REFRESH_EVERY, "horizon": 5},
    "dynamics": TINY_DYNAMICS,
}
LEARNER = {
    "mopo": {"hidden_sizes": [64, 64], "penalty": 1.0},
    # At this budget the cosine-decayed actor lr 1e-4 (OfflineRL-Kit's) learns too slowly under MOReL's halting.
    "morel": {"hidden_sizes": [64, 64], "actor_lr": 3.0e-4, "alpha_lr": 3.0e-4, "cosine_actor_lr": False},
    "combo": {"hidden_sizes": [64, 64], "actor_lr": 3.0e-4, "alpha_lr": 3.0e-4, "n_actions": 4},
}


def random_policy_return(data) -> float:
    """The dataset's reference minimum: the return of uniformly random actions."""
    return float(data.info.ref_min_score)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, small_dataset_id, tiny_model, dynamics_store):
    """One short run per algorithm, all reusing the dynamics model the session already trained."""
    root = tmp_path_factory.mktemp("runs")
    folders = {}
    for algo, learner in LEARNER.items():
        overrides = {**SMALL, "learner": learner}
        folders[algo] = train_run(
            algo,
            small_dataset_id,
            steps=STEPS[algo],
            seed=0,
            overrides=overrides,
            runs_dir=root,
            run_name=algo,
            dynamics_store=dynamics_store,
            progress=False,
        )
    return folders


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["mopo", "morel", "combo"])
def test_learner_beats_random_and_reuses_the_dynamics_model(algo, runs, small_data, tiny_model):
    record = read_eval(runs[algo])
    assert record["model_based"] is True and record["finished"] is True
    assert record["dynamics"]["reused"] is True and record["dynamics"]["key"] == tiny_model.key
    random_return = random_policy_return(small_data)
    assert record["best"]["return_mean"] > 5 * random_return, record["history"]
    store = RolloutStore.open(runs[algo] / "rollouts.zarr")
    assert len(store.generations) == STEPS[algo] // REFRESH_EVERY and store.metadata["dynamics_key"] == tiny_model.key


@pytest.mark.slow
def test_stored_rollouts_are_replayed_with_another_penalty(runs, small_dataset_id, dynamics_store, tmp_path):
    earlier = runs["mopo"] / "rollouts.zarr"
    overrides = {
        **SMALL,
        "learner": {**LEARNER["mopo"], "penalty": 2.0},
        "trainer": {**SMALL["trainer"], "eval_episodes": 1},
    }
    folder = train_run(
        "mopo",
        small_dataset_id,
        steps=500,
        seed=1,
        overrides=overrides,
        runs_dir=tmp_path,
        run_name="replay",
        rollouts=str(earlier),
        dynamics_store=dynamics_store,
        progress=False,
    )
    assert read_eval(folder)["finished"] is True
    # Two refreshes (steps 0 and 250) came from the earlier store: this run generated nothing of its own.
    assert RolloutStore.open(folder / "rollouts.zarr").generations == []


def combo_learner(small_data, push_down_states: str) -> COMBO:
    context = LearnerContext.from_data(small_data, total_steps=100, device=torch.device("cpu"))
    return COMBO(COMBOConfig(hidden_sizes=(16, 16), n_actions=3, push_down_states=push_down_states), context)


def mixed_batch(small_data, real: int = 6, model: int = 10) -> Batch:
    rows = torch.arange(real + model)
    return Batch(
        observations=small_data.observations[rows]
        + (rows >= real).float()[:, None],  # model rows shifted: recognizable
        actions=small_data.actions[rows],
        rewards=small_data.rewards[rows],
        next_observations=small_data.next_observations[rows],
        terminals=small_data.terminals[rows],
        synthetic=rows >= real,
        uncertainty={"max_std_norm": torch.zeros(real + model)},
    )


@pytest.mark.parametrize(
    "choice, expected_rows", [("mix", slice(0, 16)), ("model", slice(6, 16)), ("dataset", slice(0, 6))]
)
def test_combo_push_down_states(small_data, choice, expected_rows):
    learner = combo_learner(small_data, choice)
    batch = mixed_batch(small_data)
    seen = []

    def record_push_down_states(module, args):
        observations, actions = args[0], args[1]
        if actions.dim() == 3:  # the conservative term's call: K sampled actions per state
            seen.append(observations.detach().clone())

    handle = learner.nets["critic"].register_forward_pre_hook(record_push_down_states)
    learner.update(batch)
    handle.remove()
    normalize = learner.nets["observation_normalizer"]
    assert len(seen) == 1 and torch.equal(seen[0], normalize(batch.observations[expected_rows]))
    # The push-up term is always the dataset's (s, a) only.
    assert torch.equal(learner.push_up_rows(batch), ~batch.synthetic)


def test_combo_conservative_gap_pushes_up_dataset_rows_only(small_data):
    """With identical states, moving only the model rows' actions must not change the push-up term."""
    learner = combo_learner(small_data, "mix")
    batch = mixed_batch(small_data)
    torch.manual_seed(0)
    normalized = learner.nets["observation_normalizer"](batch.observations)
    policy = learner.nets["actor"](normalized)
    q_data = learner.nets["critic"](normalized, learner.nets["action_scaler"].to_unit(batch.actions))
    torch.manual_seed(1)
    first, _ = learner.critic_regularizer(batch, normalized, q_data, policy, policy)
    q_moved = q_data.clone()
    q_moved[:, batch.synthetic] += 100.0  # what other actions on model rows would change
    torch.manual_seed(1)
    second, _ = learner.critic_regularizer(batch, normalized, q_moved, policy, policy)
    assert torch.allclose(first, second)
    q_moved[:, ~batch.synthetic] += 1.0
    torch.manual_seed(1)
    third, _ = learner.critic_regularizer(batch, normalized, q_moved, policy, policy)
    critics = q_data.shape[0]
    assert torch.allclose(first - third, torch.tensor(learner.config.cql_alpha * critics * 1.0))
