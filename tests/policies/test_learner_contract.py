"""The contract every registered learner keeps with the trainer, checked on synthetic data.

For each entry of ``policies.registry.LEARNERS``: finite tensor metrics after a few
updates (model-based learners get synthetic rows and the uncertainty features),
``act`` shape and bounds, a state-dict round trip through ``torch.load(weights_only=True)``,
an exact resume, gradient isolation (each loss term handed to ``LearnerBase.step``
reaches only the parameters of the optimizer it is named after: the one-backward
design of SAC, CQL, IQL and AWAC depends on it), and updates under bfloat16
autocast that keep the weights float32.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch

from mbrl_core.batch import Batch
from mbrl_core.contracts import DISAGREEMENT_MAX, MAX_PAIRWISE_DISAGREEMENT, MAX_STD_NORM, UNCERTAINTY_FEATURES
from mbrl_core.learner import LearnerContext
from mbrl_core.normalization import Normalizer
from policies.base import LearnerBase
from policies.registry import LEARNERS

OBS_DIM, ACT_DIM, ROWS = 5, 2, 32
ACTION_LOW, ACTION_HIGH = torch.tensor([-2.0, 0.0]), torch.tensor([1.0, 4.0])  # not the unit box
SMALL = {"hidden_sizes": (16, 16)}
# Enough updates for TD3-BC's delayed actor (every 2nd) to have stepped.
UPDATES = 4


def make_context() -> LearnerContext:
    generator = torch.Generator().manual_seed(0)
    return LearnerContext(
        obs_dim=OBS_DIM,
        act_dim=ACT_DIM,
        action_low=ACTION_LOW,
        action_high=ACTION_HIGH,
        observation_normalizer=Normalizer(torch.randn(OBS_DIM, generator=generator), torch.rand(OBS_DIM) + 0.5),
        total_steps=100,
        device=torch.device("cpu"),
        reward_min=-1.0,
        reward_max=2.0,
        episode_return_min=0.0,
        episode_return_max=50.0,
        extras={DISAGREEMENT_MAX: 1.0},  # MOReL's threshold comes from it
    )


def make_learner(name: str, seed: int = 0, **overrides) -> LearnerBase:
    entry = LEARNERS[name]
    torch.manual_seed(seed)
    return entry.learner_cls(entry.config_cls(**SMALL, **overrides), make_context())


def make_batches(name: str, count: int = UPDATES + 2) -> list[Batch]:
    """Random transitions in env units; a model-based learner's batches are half model rows."""
    generator = torch.Generator().manual_seed(1)

    def one() -> Batch:
        unit = torch.rand(ROWS, ACT_DIM, generator=generator)
        batch = Batch(
            observations=torch.randn(ROWS, OBS_DIM, generator=generator),
            actions=ACTION_LOW + unit * (ACTION_HIGH - ACTION_LOW),
            rewards=torch.randn(ROWS, generator=generator),
            next_observations=torch.randn(ROWS, OBS_DIM, generator=generator),
            terminals=(torch.rand(ROWS, generator=generator) < 0.2).float(),
        )
        if not LEARNERS[name].model_based:
            return batch
        synthetic = torch.arange(ROWS) >= ROWS // 2
        # Spread wide enough that some model rows are unknown to MOReL and MOPO's penalty matters.
        features = {feature: torch.rand(ROWS, generator=generator) * 4 * synthetic for feature in UNCERTAINTY_FEATURES}
        return Batch(**vars(batch) | {"synthetic": synthetic, "uncertainty": features})

    return [one() for _ in range(count)]


def trainable(learner: LearnerBase) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in learner.nets.named_parameters() if p.requires_grad}


def tensors_equal(first: dict, second: dict) -> bool:
    """Nested state dicts hold the same tensors (exactly) and the same plain values."""
    if first.keys() != second.keys():
        return False
    for key, value in first.items():
        other = second[key]
        if isinstance(value, dict):
            if not (isinstance(other, dict) and tensors_equal(value, other)):
                return False
        elif isinstance(value, list):
            if not (isinstance(other, list) and tensors_equal(dict(enumerate(value)), dict(enumerate(other)))):
                return False
        elif isinstance(value, torch.Tensor):
            if not (isinstance(other, torch.Tensor) and torch.equal(value, other)):
                return False
        elif value != other:
            return False
    return True


NAMES = sorted(LEARNERS)


@pytest.mark.parametrize("name", NAMES)
def test_metrics_are_finite_tensors_after_updates(name):
    learner = make_learner(name)
    seen: dict[str, torch.Tensor] = {}
    for batch in make_batches(name)[:UPDATES]:
        seen |= learner.update(batch)
    assert seen, f"{name} reports no metrics"
    for metric, value in seen.items():
        # Tensors, not floats: turning a metric into a Python number would wait on the device every step.
        assert isinstance(value, torch.Tensor) and value.dim() == 0, f"{name}.{metric} is {type(value).__name__}"
        assert torch.isfinite(value), f"{name}.{metric} = {value}"
    assert learner.updates == UPDATES


@pytest.mark.parametrize("name", NAMES)
def test_act_returns_actions_inside_the_box_in_env_units(name):
    learner = make_learner(name)
    for batch in make_batches(name)[:2]:
        learner.update(batch)
    observations = 100 * torch.randn(7, OBS_DIM)  # far outside the data: the scaler must still bound the actions
    for deterministic in (True, False):
        actions = learner.act(observations, deterministic=deterministic)
        assert actions.shape == (7, ACT_DIM) and actions.dtype == torch.float32
        assert torch.isfinite(actions).all()
        assert (actions >= ACTION_LOW).all() and (actions <= ACTION_HIGH).all()
        assert learner.act(observations[0], deterministic=deterministic).shape == (ACT_DIM,)
    assert torch.equal(learner.act(observations), learner.act(observations)), "deterministic act must not sample"


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_through_a_weights_only_file(name):
    source = make_learner(name)
    for batch in make_batches(name)[:UPDATES]:
        source.update(batch)
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    restored = make_learner(name, seed=99)  # other initial weights
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert tensors_equal(restored.state_dict(), source.state_dict())
    observations = torch.randn(5, OBS_DIM)
    assert torch.equal(restored.act(observations), source.act(observations))


@pytest.mark.parametrize("name", NAMES)
def test_resume_continues_exactly_as_an_uninterrupted_run(name):
    batches = make_batches(name)
    straight = make_learner(name)
    for batch in batches[:3]:
        straight.update(batch)
    saved = copy.deepcopy(straight.state_dict())
    torch.manual_seed(7)
    for batch in batches[3:]:
        straight.update(batch)

    resumed = make_learner(name, seed=99)
    resumed.load_state_dict(saved)
    torch.manual_seed(7)  # the trainer restores the RNG with the checkpoint
    for batch in batches[3:]:
        resumed.update(batch)
    assert tensors_equal(resumed.state_dict(), straight.state_dict())


# CQL's Lagrange variant adds α', a parameter with a loss of its own (its dual ascent).
@pytest.mark.parametrize(("name", "overrides"), [(name, {}) for name in NAMES] + [("cql", {"lagrange_threshold": 5.0})])
def test_each_loss_term_reaches_only_its_own_optimizers_parameters(name, overrides, monkeypatch):
    learner = make_learner(name, **overrides)
    params = trainable(learner)
    owned = {
        optimizer_name: {id(p) for group in optimizer.param_groups for p in group["params"]}
        for optimizer_name, optimizer in learner.optimizers.items()
    }
    # Every trainable parameter has exactly one optimizer; targets and buffers are frozen.
    assert sorted(id(p) for p in params.values()) == sorted(i for ids in owned.values() for i in ids)

    reached: dict[str, set[str]] = {}
    real_step = LearnerBase.step

    def inspecting_step(self, losses):
        for term, loss in losses.items():
            grads = torch.autograd.grad(loss, list(params.values()), retain_graph=True, allow_unused=True)
            touched = {n for (n, p), g in zip(params.items(), grads) if g is not None and bool(g.abs().sum() > 0)}
            reached[term] = reached.get(term, set()) | touched
        real_step(self, losses)

    monkeypatch.setattr(LearnerBase, "step", inspecting_step)
    for batch in make_batches(name)[:UPDATES]:
        learner.update(batch)

    assert set(reached) == set(learner.optimizers), f"{name}: every optimizer gets a loss term"
    for term, names in reached.items():
        strays = sorted(n for n in names if id(params[n]) not in owned[term])
        assert not strays, f"{name}: the '{term}' loss reaches {strays}, which its optimizer does not own"
        assert names, f"{name}: the '{term}' loss reaches none of its parameters"


@pytest.mark.parametrize("name", NAMES)
def test_updates_under_bfloat16_autocast_keep_float32_weights(name):
    learner = make_learner(name)
    for batch in make_batches(name)[:UPDATES]:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            metrics = learner.update(batch)
        assert all(torch.isfinite(value) for value in metrics.values())
    state = learner.state_dict()
    assert all(t.dtype == torch.float32 for t in state["nets"].values() if t.is_floating_point())
    for optimizer_state in state["optimizers"].values():
        moments = [t for entry in optimizer_state["state"].values() for k, t in entry.items() if k != "step"]
        assert all(t.dtype == torch.float32 for t in moments)
    assert learner.act(torch.randn(3, OBS_DIM)).dtype == torch.float32


def test_model_based_batches_carry_the_features_the_learners_read():
    # Guards the fixture: MOPO and MOReL read these two names from every model batch.
    batch = make_batches("mopo", count=1)[0]
    assert {MAX_STD_NORM, MAX_PAIRWISE_DISAGREEMENT} <= set(batch.uncertainty)
    assert batch.synthetic is not None and batch.synthetic.any() and not batch.synthetic.all()
