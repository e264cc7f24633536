"""trainer.precision: bfloat16 autocast around the policy updates, float32 everywhere else."""

from __future__ import annotations

import pytest
import torch

from mbrl_core.batch import Batch
from mbrl_core.errors import ConfigError
from mbrl_core.trainer import OfflineTrainer, TrainerConfig
from tests.policies.test_learner_contract import make_batches, make_learner


class ListSampler:
    """The batches of a list, in turn; records the autocast state the learner's update will run in."""

    def __init__(self, batches: list[Batch]) -> None:
        self.batches, self.drawn = batches, 0

    def prepare(self, step, learner) -> dict:
        return {}

    def sample(self) -> Batch:
        self.drawn += 1
        return self.batches[(self.drawn - 1) % len(self.batches)]

    def state_dict(self) -> dict:
        return {"drawn": self.drawn}

    def load_state_dict(self, state: dict) -> None:
        self.drawn = state["drawn"]


@pytest.mark.parametrize("precision", ["32", "bf16"])
def test_trainer_runs_updates_in_the_configured_precision(precision, monkeypatch):
    learner = make_learner("sac")
    dtypes = []
    real_update = learner.update

    def recording_update(batch):
        dtypes.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else torch.float32)
        return real_update(batch)

    monkeypatch.setattr(learner, "update", recording_update)
    config = TrainerConfig(steps=3, log_every=3, eval_every=100, precision=precision)
    OfflineTrainer(learner, ListSampler(make_batches("sac")), config, progress=False).fit()
    expected = torch.bfloat16 if precision == "bf16" else torch.float32
    assert dtypes == [expected] * 3
    assert not torch.is_autocast_enabled("cpu")  # nothing outside the update (evaluation, rollouts) is affected
    assert all(p.dtype == torch.float32 for p in learner.nets.parameters())


def test_trainer_precision_accepts_a_yaml_number_and_refuses_unknown_values():
    assert TrainerConfig(precision=32).precision == "32"  # `--set trainer.precision=32` parses as an int
    with pytest.raises(ConfigError, match="trainer.precision must be one of 32, bf16"):
        TrainerConfig(precision="fp16")
