"""D4RL-style dataset collection: train a behaviour policy online, then log it.

An online SAC agent is trained for ``sac_steps`` environment steps (one update
per step after ``warmup_steps`` uniformly random ones), with a policy
checkpoint evaluated every ``checkpoint_every`` steps (:mod:`.behaviour`, its
replay buffer in :mod:`.replay`). From that training the D4RL recipe
(:mod:`.recipe`) makes ``<name>/{random,medium,medium-replay,expert,medium-expert}-v0``,
written with :mod:`mbrl_core.minari_writer`.

Each dataset records ``ref_min_score`` (the random policy's mean return),
``ref_max_score`` (the expert's), its ``dataset_kind``, a description of every
choice, and a ``collection.json`` beside its ``data/`` folder. Everything else
lives in ``<minari root>/<name>/collection/``: the behaviour-policy
checkpoints, the resume state and the collection record. Minari ignores that
folder (it has no ``data/``). Resuming is exact on CPU.
"""

from workflows.collect.behaviour import load_behaviour_policy
from workflows.collect.collection import CollectResult, collect
from workflows.collect.recipe import KIND_METADATA_KEY, behaviour_warnings, choose_medium
from workflows.collect.replay import ReplayBuffer
from workflows.collect.settings import (
    DATASET_KINDS,
    RECORD_FILE,
    STATE_FILE,
    CollectConfig,
    collection_dir,
    dataset_ids,
)

__all__ = [
    "DATASET_KINDS",
    "KIND_METADATA_KEY",
    "RECORD_FILE",
    "STATE_FILE",
    "CollectConfig",
    "CollectResult",
    "ReplayBuffer",
    "behaviour_warnings",
    "choose_medium",
    "collect",
    "collection_dir",
    "dataset_ids",
    "load_behaviour_policy",
]
