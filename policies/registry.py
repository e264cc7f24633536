"""Learners by name: what the trainer and the CLI look up."""

from __future__ import annotations

from dataclasses import dataclass

from mbrl_core.errors import ConfigError
from policies.awac import AWAC, AWACConfig
from policies.bc import BC, BCConfig
from policies.combo import COMBO, COMBOConfig
from policies.cql import CQL, CQLConfig
from policies.iql import IQL, IQLConfig
from policies.mopo import MOPO, MOPOConfig
from policies.morel import MOReL, MOReLConfig
from policies.sac import SAC, SACConfig
from policies.td3bc import TD3BC, TD3BCConfig


@dataclass(frozen=True)
class LearnerEntry:
    learner_cls: type
    config_cls: type
    model_based: bool
    halts_rollouts: bool = False  # rollouts stop at unknown states (MOReL's USAD); the config gives halt_threshold()


LEARNERS: dict[str, LearnerEntry] = {
    "bc": LearnerEntry(BC, BCConfig, model_based=False),
    "td3bc": LearnerEntry(TD3BC, TD3BCConfig, model_based=False),
    "iql": LearnerEntry(IQL, IQLConfig, model_based=False),
    "awac": LearnerEntry(AWAC, AWACConfig, model_based=False),
    "cql": LearnerEntry(CQL, CQLConfig, model_based=False),
    "sac": LearnerEntry(SAC, SACConfig, model_based=False),
    "mopo": LearnerEntry(MOPO, MOPOConfig, model_based=True),
    "morel": LearnerEntry(MOReL, MOReLConfig, model_based=True, halts_rollouts=True),
    "combo": LearnerEntry(COMBO, COMBOConfig, model_based=True),
}


def get_learner(name: str) -> LearnerEntry:
    try:
        return LEARNERS[name]
    except KeyError:
        raise ConfigError(f"unknown learner '{name}' (known: {', '.join(sorted(LEARNERS))})") from None
