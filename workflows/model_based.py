"""Everything a model-based run needs besides its learner: the dynamics model, rollouts, store and sampler.

The lead's ``train_run`` calls :func:`prepare_model_based_run` by import string.
The dynamics model comes from the artifact store (trained there first if it is
missing); rollouts go to ``<run>/rollouts.zarr`` (for a run on a URL, straight to
``<run URL>/rollouts.zarr``: ``rollouts_store``).

``--rollouts <store>`` replays an earlier store: refresh ``g`` of this run
loads generation ``g`` of that store into the buffer instead of generating
(the penalty is applied at sampling, so a stored set of rollouts serves a new
λ, threshold or κ without a single model call); once the store runs out, the
run generates fresh rollouts under its own policy and writes them to its own
store. The replayed store must come from the same dataset and dynamics model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dynamics.rollouts import Halting, RolloutConfig, RolloutGenerator
from dynamics.service import DynamicsService
from mbrl_core.config import build_config
from mbrl_core.contracts import DISAGREEMENT_MAX, MODEL_KEY, UNCERTAINTY_FEATURES
from mbrl_core.data import TransitionData
from mbrl_core.errors import ArtifactError
from mbrl_core.model_buffer import ModelBuffer
from mbrl_core.rollout_store import RolloutStore
from mbrl_core.sampler import MixedSampler, RealSampler, Sampler
from policies.registry import get_learner

ROLLOUTS_FOLDER = "rollouts.zarr"

# Another process training the same dynamics model (a second run or grid on a fresh dataset): wait for it and
# reuse its model. The longest fits of the quality benchmark took about an hour.
OTHER_FIT_WAIT_SECONDS = 6 * 3600.0


@dataclass
class ModelBasedSetup:
    sampler: Sampler
    context_extras: dict[str, Any]
    dynamics_info: dict[str, Any]


def prepare_model_based_run(
    algo: str,
    data: TransitionData,
    config: dict[str, Any],
    run_dir: Path,
    device: torch.device,
    seed: int,
    rollouts_path: str | None = None,
    dynamics_store: str | None = None,
    retrain_dynamics: bool = False,
    rollouts_store: str | None = None,
    progress: bool = True,
) -> ModelBasedSetup:
    """Load (or train, with a progress bar when ``progress``) the dynamics model and build the mixed sampler
    for ``algo``'s resolved ``config``."""
    rollouts = build_config(RolloutConfig, config.get("rollouts"), f"{algo}.rollouts")
    learner_config: Any = build_config(get_learner(algo).config_cls, config.get("learner"), f"{algo}.learner")
    service = DynamicsService.fit(
        data,
        config.get("dynamics") or None,
        store=dynamics_store,
        retrain=retrain_dynamics,
        progress=progress,
        wait_for_other_fit=OTHER_FIT_WAIT_SECONDS,
    ).to(device)
    service.check_compatible(data)
    halting = halting_rule(algo, learner_config, service)
    weights = service.weights_digest  # hashes every weight: once per run
    provenance = {
        "algo": algo,
        "dataset_id": data.info.dataset_id,
        "dataset_fingerprint": data.fingerprint,
        "dynamics_key": service.key,
        "dynamics_weights": weights,
        "horizon": rollouts.horizon,
        "batch_size": rollouts.batch_size,
        "refresh_every": rollouts.refresh_every,
        "seed": seed,
        "halt_threshold": None if halting is None else halting.threshold,
    }
    store = run_store(rollouts_store or Path(run_dir) / ROLLOUTS_FOLDER, data, rollouts, provenance)
    replay = open_replay(rollouts_path, data, service, weights) if rollouts_path else None
    sampler = MixedSampler(
        RealSampler(data, batch_size=int(config["trainer"]["batch_size"]), seed=seed),
        ModelBuffer(rollouts.retain_generations * rollouts.batch_size * rollouts.horizon, device),
        RolloutGenerator(service, data.observations, rollouts.horizon, rollouts.batch_size, seed=seed, halting=halting),
        batch_size=int(config["trainer"]["batch_size"]),
        real_fraction=rollouts.real_fraction,
        refresh_every=rollouts.refresh_every,
        seed=seed,
        store=store,
        replay=replay,
        background=rollouts.background,
    )
    extras = {DISAGREEMENT_MAX: float(service.disagreement_stats["max"]), MODEL_KEY: service.key}
    # pretrain_seconds: what training this model cost, whether this run paid it (reused False) or an earlier one did.
    info = {
        "key": service.key,
        "reused": bool(service.was_cached),
        "pretrain_seconds": float(service.metrics["train_seconds"]),
    }
    return ModelBasedSetup(sampler=sampler, context_extras=extras, dynamics_info=info)


def halting_rule(algo: str, learner_config: Any, service: DynamicsService) -> Halting | None:
    """MOReL-style halting for learners registered with ``halts_rollouts``."""
    if not get_learner(algo).halts_rollouts:
        return None
    stats = service.disagreement_stats
    if learner_config.uncertainty_feature != stats["feature"]:
        raise ArtifactError(
            f"the halting feature '{learner_config.uncertainty_feature}' differs from the dataset statistic "
            f"'{stats['feature']}' stored with dynamics model {service.key}"
        )
    return Halting(learner_config.uncertainty_feature, learner_config.halt_threshold(float(stats["max"])))


def run_store(
    url: str | Path, data: TransitionData, rollouts: RolloutConfig, provenance: dict[str, Any]
) -> RolloutStore:
    """The run's own store: reopened on resume (the sampler cuts it back to the checkpoint), else created."""
    if RolloutStore.exists(url):
        store = RolloutStore.open(url, mode="a")
        check_store_matches(store, data, provenance["dynamics_key"], provenance["dynamics_weights"])
        return store
    return RolloutStore.create(
        url,
        obs_dim=data.obs_dim,
        act_dim=data.act_dim,
        uncertainty_names=list(UNCERTAINTY_FEATURES),
        metadata=provenance,
        chunk_rows=rollouts.chunk_rows,
    )


def open_replay(url: str, data: TransitionData, service: DynamicsService, weights: str) -> RolloutStore:
    store = RolloutStore.open(url, mode="r")
    check_store_matches(store, data, service.key, weights)
    if not store.generations:
        raise ArtifactError(f"rollout store {url} holds no committed generation to replay")
    return store


def check_store_matches(store: RolloutStore, data: TransitionData, dynamics_key: str, weights: str) -> None:
    """A store's rollouts are only valid for the dataset and dynamics model (that very fit) that produced them."""
    meta = store.metadata
    if meta.get("dataset_fingerprint") != data.fingerprint:
        raise ArtifactError(
            f"rollout store {store.url} was generated from dataset '{meta.get('dataset_id')}' (fingerprint "
            f"{meta.get('dataset_fingerprint')}), not from '{data.info.dataset_id}' ({data.fingerprint})"
        )
    if meta.get("dynamics_key") != dynamics_key:
        raise ArtifactError(
            f"rollout store {store.url} was generated by dynamics model {meta.get('dynamics_key')}, this run uses "
            f"{dynamics_key}; use the same dynamics config, or drop --rollouts"
        )
    recorded = meta.get("dynamics_weights")  # stores written before the weights were recorded have none
    if recorded is not None and recorded != weights:
        raise ArtifactError(
            f"rollout store {store.url} was generated by another fit of dynamics model {dynamics_key} (weights "
            f"{recorded}; the store now holds {weights}: it was trained again since, after the store lost it or with "
            "--retrain); restore that model or start a new run, so that one run never mixes two models"
        )
    missing = set(UNCERTAINTY_FEATURES) - set(store.uncertainty_names)
    if missing:
        raise ArtifactError(f"rollout store {store.url} lacks uncertainty feature(s) {', '.join(sorted(missing))}")
