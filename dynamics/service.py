"""DynamicsService: train once per (dataset, config), reuse everywhere.

    service = DynamicsService.fit(data, {"ensemble_size": 7})   # trains, or loads the stored model
    service = DynamicsService.load(key)
    prediction = service.predict(obs, actions)                  # elite-mean next state, reward, terminal
    step = service.step(obs, actions, generator)                # a sample from one random elite per row
    steps = service.step_segments(obs, actions, [(rows, generator), ...])  # many requests, one forward pass

Rollout code imports this module only: plain torch, no Lightning (the training
path imports :mod:`dynamics.lightning_module` inside ``fit``).
"""

from __future__ import annotations

import hashlib
import platform
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynamics.artifacts import SCHEMA_VERSION, ArtifactStore, artifact_key
from dynamics.config import DynamicsConfig, make_dynamics_config
from dynamics.ensemble import EnsembleOutput, GaussianEnsemble, precision_context
from dynamics.termination import TerminationRule, choose_termination
from dynamics.uncertainty import (
    MAX_PAIRWISE_DISAGREEMENT,
    max_pairwise_disagreement,
    uncertainty_features,
)
from mbrl_core.data import TransitionData
from mbrl_core.errors import ArtifactError
from mbrl_core.locks import LockHeld

# rows per forward chunk on CPU, per thread: keeps the [E, rows, hidden] activations in cache
# (measured best at 512-1024 per thread, benchmarks/dynamics.py); accelerators take big chunks
CPU_CHUNK_ROWS_PER_THREAD = 1024
ACCELERATOR_CHUNK_ROWS = 1 << 17


def forward_chunk_rows(device: torch.device) -> int:
    if device.type == "cpu":
        return CPU_CHUNK_ROWS_PER_THREAD * torch.get_num_threads()
    return ACCELERATOR_CHUNK_ROWS


@dataclass
class Prediction:
    next_observations: torch.Tensor  # [B, S], mean over elites
    rewards: torch.Tensor  # [B]
    terminals: torch.Tensor  # [B] float 0/1
    uncertainty: dict[str, torch.Tensor]  # name -> [B]
    member_means: torch.Tensor | None = None  # [E, B, S + 1] (next obs, reward) of every member
    member_stds: torch.Tensor | None = None  # [E, B, S + 1]


@dataclass
class ModelStep:
    next_observations: torch.Tensor  # [B, S]
    rewards: torch.Tensor  # [B] raw (unpenalized)
    terminals: torch.Tensor  # [B] float 0/1
    uncertainty: dict[str, torch.Tensor]


class DynamicsService:
    def __init__(
        self, ensemble: GaussianEnsemble, meta: dict[str, Any], store: ArtifactStore, was_cached: bool = False
    ) -> None:
        self.ensemble = ensemble.eval()
        self.meta = meta
        self.store = store
        self.was_cached = was_cached
        self.termination = TerminationRule.from_dict(meta["termination"])
        self.config = DynamicsConfig(**meta["config"])
        self._elite_index = torch.tensor(meta["elites"], dtype=torch.long, device=self.device)
        members = meta["elites"] if self.config.uncertainty_members == "elites" else range(ensemble.ensemble_size)
        self._uncertainty_index = torch.tensor(list(members), dtype=torch.long, device=self.device)

    # ------------------------------------------------------------------ construction

    @classmethod
    def fit(
        cls,
        data: TransitionData,
        config: DynamicsConfig | dict | None = None,
        store: str | Path | None = None,
        retrain: bool = False,
        progress: bool = True,
        wait_for_other_fit: float = 0.0,
        **trainer_kwargs,
    ) -> DynamicsService:
        """The stored model for (data, config) if there is one (``was_cached``), else train and store it.

        While another process trains the same model, this one is refused at once, or with
        ``wait_for_other_fit`` > 0 waits up to that many seconds for it and then reuses what it stored.
        ``trainer_kwargs`` go to ``lightning.Trainer`` (accelerator, devices, strategy, num_nodes...)."""
        config = make_dynamics_config(config, data.info.dataset_id)
        artifacts = ArtifactStore(store)
        key = artifact_key(data.fingerprint, config.to_dict())
        if artifacts.exists(key) and not retrain:
            service = cls.load(key, store=artifacts.where, device=data.device)
            service.check_compatible(data)
            service.was_cached = True
            return service
        try:
            return cls._train(data, config, artifacts, key, retrain, progress, trainer_kwargs)
        except LockHeld:
            if wait_for_other_fit <= 0:
                raise
        artifacts.wait_for_slot(key, wait_for_other_fit)
        return cls.fit(
            data, config, artifacts.where, progress=progress, wait_for_other_fit=wait_for_other_fit, **trainer_kwargs
        )

    @classmethod
    def _train(cls, data, config, artifacts, key, retrain, progress, trainer_kwargs) -> DynamicsService:
        from dynamics.datamodule import make_split
        from dynamics.lightning_module import fit_ensemble, select_elites
        from dynamics.quality import member_quality, summarize_quality

        termination = choose_termination(
            config.termination, data.info.env_id, data.info.env_spec_json, bool(data.terminals.any())
        )
        split = make_split(data, config, torch.Generator().manual_seed(config.seed))
        with torch.random.fork_rng(devices=[]):  # seeded initial weights without touching the caller's RNG
            torch.manual_seed(config.seed)
            ensemble = _build_ensemble(config, data.obs_dim, data.act_dim, termination.is_learned)
        normalizer = split.input_normalizer()
        ensemble.set_input_normalization(normalizer.mean, normalizer.std)
        with artifacts.staging(key) as folder:
            resume_path, resumed_after = fit_checkpoint_to_use(artifacts, key, ensemble, fresh=retrain)
            started = time.perf_counter()
            result = fit_ensemble(
                ensemble, split, config, progress, log_dir=str(folder), resume_path=resume_path, **trainer_kwargs
            )
            train_seconds = time.perf_counter() - started
            ensemble = ensemble.to(data.device).eval()
            per_member = member_quality(ensemble, split, config.precision)
            elites = select_elites(per_member["holdout_mse"], config.elites)
            quality = summarize_quality(per_member, elites, len(split.holdout_inputs))
            meta = _metadata(
                key, data, config, termination, elites, quality, train_seconds, result, len(split.train_inputs)
            )
            meta["metrics"]["resumed_after_epoch"] = resumed_after
            service = cls(ensemble, meta, artifacts)
            meta["disagreement_stats"] = service._dataset_disagreement(data)
            if result.global_rank_zero:
                artifacts.publish(
                    folder,
                    key,
                    {"ensemble": {k: v.cpu() for k, v in ensemble.state_dict().items()}},
                    meta,
                    replace=retrain,
                )
                artifacts.remove_fit_checkpoint(key)
        return service

    @classmethod
    def load(
        cls, key: str, store: str | Path | None = None, device: torch.device | str | None = None
    ) -> DynamicsService:
        artifacts = ArtifactStore(store)
        key = artifacts.resolve(key)
        meta, tensors = artifacts.read(key)
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise ArtifactError(
                f"dynamics model {key} has schema version {meta.get('schema_version')}, this code "
                f"reads {SCHEMA_VERSION}; retrain it"
            )
        config = DynamicsConfig(**meta["config"])
        ensemble = _build_ensemble(config, meta["obs_dim"], meta["act_dim"], meta["termination"]["kind"] == "learned")
        ensemble.load_state_dict(tensors["ensemble"])
        return cls(ensemble.to(device or "cpu"), meta, artifacts)

    def to(self, device: torch.device | str) -> DynamicsService:
        self.ensemble.to(device)
        self._elite_index = self._elite_index.to(device)
        self._uncertainty_index = self._uncertainty_index.to(device)
        return self

    # ------------------------------------------------------------------ facts

    @property
    def key(self) -> str:
        return self.meta["key"]

    @property
    def device(self) -> torch.device:
        return self.ensemble.input_mean.device

    @property
    def elites(self) -> list[int]:
        return list(self.meta["elites"])

    @property
    def metrics(self) -> dict[str, Any]:
        return self.meta["metrics"]

    @property
    def quality(self) -> dict[str, Any]:
        return self.meta["quality"]

    @property
    def disagreement_stats(self) -> dict[str, float]:
        return self.meta["disagreement_stats"]

    @property
    def path(self) -> Path:
        return self.store.path(self.key)

    @property
    def weights_digest(self) -> str:
        """A hash of the ensemble's weights: one fit of ``key`` told from another (a refit after the store lost it)."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.ensemble.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def check_compatible(self, data: TransitionData) -> None:
        """Refuse a dataset whose observation or action space differs from the model's, or (the spaces
        matching) whose content differs from what the model was trained on (its recorded fingerprint)."""
        for what, space in (("observation", data.info.observation_space), ("action", data.info.action_space)):
            stored = self.meta["spaces"][what]
            if list(space.shape) != stored["shape"]:
                detail = f"{what} shape {tuple(stored['shape'])} vs {tuple(space.shape)}"
            elif not (np.allclose(space.low, stored["low"]) and np.allclose(space.high, stored["high"])):
                detail = f"{what} space bounds differ"
            else:
                continue
            raise ArtifactError(
                f"dynamics model {self.key} (trained on '{self.meta['dataset']['id']}') does not fit dataset "
                f"'{data.info.dataset_id}': {detail}; train one for it with `mbrl dynamics train "
                f"--dataset {data.info.dataset_id}`"
            )
        trained_on = self.meta["dataset"].get("fingerprint")
        if trained_on != data.fingerprint:
            raise ArtifactError(
                f"dynamics model {self.key} at {self.path} was trained on '{self.meta['dataset']['id']}' (fingerprint "
                f"{trained_on}), not on '{data.info.dataset_id}' ({data.fingerprint}): its store slot holds another "
                "dataset's model; delete that folder or retrain with --retrain"
            )

    # ------------------------------------------------------------------ inference

    @torch.no_grad()
    def _forward(self, observations: torch.Tensor, actions: torch.Tensor) -> EnsembleOutput:
        inputs = torch.cat([observations, actions], dim=-1).to(self.device, torch.float32)
        with precision_context(self.config.precision, self.device):
            chunks = [self.ensemble(part) for part in inputs.split(forward_chunk_rows(self.device))]
        logits = [c.terminal_logit for c in chunks] if self.ensemble.terminal_head else None
        return EnsembleOutput(
            torch.cat([c.mean for c in chunks], dim=1),
            torch.cat([c.logvar for c in chunks], dim=1),
            torch.cat(logits, dim=1) if logits else None,
        )

    def _uncertainty(self, out: EnsembleOutput, stds: torch.Tensor) -> dict[str, torch.Tensor]:
        members = self._uncertainty_index
        return uncertainty_features(out.mean[members], stds[members], self.meta["obs_dim"])

    def predict(self, observations: torch.Tensor, actions: torch.Tensor, per_member: bool = False) -> Prediction:
        """Mean prediction of the elites, with the uncertainty features of the same forward pass."""
        observations = observations.to(self.device, torch.float32)
        out = self._forward(observations, actions)
        stds = torch.exp(0.5 * out.logvar)
        s = self.meta["obs_dim"]
        elite_mean = out.mean[self._elite_index].mean(dim=0)
        next_observations = observations + elite_mean[:, :s]
        if self.termination.is_learned:
            assert out.terminal_logit is not None  # a learned rule has the head
            terminals = (torch.sigmoid(out.terminal_logit[self._elite_index]).mean(dim=0) > 0.5).float()
        else:
            terminals = self.termination(next_observations)
        member_means = None
        if per_member:
            member_means = out.mean.clone()
            member_means[..., :s] += observations
        return Prediction(
            next_observations,
            elite_mean[:, s],
            terminals,
            self._uncertainty(out, stds),
            member_means,
            stds if per_member else None,
        )

    def step(self, observations: torch.Tensor, actions: torch.Tensor, generator: torch.Generator) -> ModelStep:
        """One model step per row: a Gaussian sample from one random elite (MBPO/MOPO), terminals from
        the termination rule, uncertainty features from the same forward pass. ``generator`` lives on
        the model's device."""
        return self.step_segments(observations, actions, [(observations.shape[0], generator)])[0]

    def step_segments(
        self, observations: torch.Tensor, actions: torch.Tensor, segments: list[tuple[int, torch.Generator]]
    ) -> list[ModelStep]:
        """Several step requests, their rows concatenated, in ONE forward pass. ``segments`` lists each
        request's (rows, generator) in row order; a request's elite choices and noise come from its own
        generator, drawn as :meth:`step` draws them, so its result is the solo ``step`` of its rows
        (up to the forward pass's rounding, which BLAS may vary with the batch's size)."""
        observations = observations.to(self.device, torch.float32)
        sizes = [rows for rows, _ in segments]
        if sum(sizes) != observations.shape[0]:
            raise ValueError(f"step segments cover {sum(sizes)} rows, the batch has {observations.shape[0]}")
        out = self._forward(observations, actions)
        stds = torch.exp(0.5 * out.logvar)
        s = self.meta["obs_dim"]
        draws = [self._draw_elites_and_noise(rows, s + 1, generator) for rows, generator in segments]
        chosen = torch.cat([elites for elites, _ in draws])
        noise = torch.cat([noise for _, noise in draws])
        rows = torch.arange(observations.shape[0], device=self.device)
        sample = out.mean[chosen, rows] + stds[chosen, rows] * noise
        next_observations = observations + sample[:, :s]
        if self.termination.is_learned:
            assert out.terminal_logit is not None  # a learned rule has the head
            terminals = (out.terminal_logit[chosen, rows] > 0).float()
        else:
            terminals = self.termination(next_observations)
        uncertainty = {name: values.split(sizes) for name, values in self._uncertainty(out, stds).items()}
        parts = zip(next_observations.split(sizes), sample[:, s].split(sizes), terminals.split(sizes))
        return [
            ModelStep(*part, {name: values[i] for name, values in uncertainty.items()}) for i, part in enumerate(parts)
        ]

    def _draw_elites_and_noise(
        self, rows: int, width: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One request's random draws, in a fixed order: an elite per row, then the standard normal noise."""
        chosen = self._elite_index[
            torch.randint(len(self._elite_index), (rows,), generator=generator, device=self.device)
        ]
        return chosen, torch.randn((rows, width), generator=generator, device=self.device)

    def _dataset_disagreement(self, data: TransitionData) -> dict[str, Any]:
        """MOReL's statistics of the disagreement over the dataset's (s, a): its max sets the HALT threshold."""
        values = []
        for obs, act in zip(data.observations.split(1 << 16), data.actions.split(1 << 16)):
            out = self._forward(obs, act)
            values.append(max_pairwise_disagreement(out.mean[self._uncertainty_index][..., : self.meta["obs_dim"]]))
        disagreement = torch.cat(values).double().sort().values
        return {
            "feature": MAX_PAIRWISE_DISAGREEMENT,
            "max": float(disagreement[-1]),
            "mean": float(disagreement.mean()),
            "p99": float(disagreement[int(0.99 * (len(disagreement) - 1))]),
        }


# --------------------------------------------------------------------------- helpers


def fit_checkpoint_to_use(
    artifacts: ArtifactStore, key: str, ensemble: GaussianEnsemble, fresh: bool
) -> tuple[Path, int | None]:
    """The fit checkpoint path of ``key`` and the epochs it has done (None: the fit starts from scratch), after
    saying that the fit resumes from it (or, when it cannot be used or ``fresh`` asks for a new fit, deleting it)."""
    from dynamics.lightning_module import read_fit_checkpoint

    path = artifacts.fit_checkpoint(key)
    if not path.is_file():
        return path, None
    epochs, problem = (None, "a new fit was asked for (--retrain)") if fresh else read_fit_checkpoint(path, ensemble)
    if epochs is None:
        print(f"dynamics model {key}: not resuming from {path} ({problem}); training from the start")
        path.unlink(missing_ok=True)
    else:
        print(f"dynamics model {key}: resuming the interrupted fit after epoch {epochs} ({path})")
    return path, epochs


def _build_ensemble(config: DynamicsConfig, obs_dim: int, act_dim: int, terminal_head: bool) -> GaussianEnsemble:
    return GaussianEnsemble(
        input_dim=obs_dim + act_dim,
        target_dim=obs_dim + 1,
        ensemble_size=config.ensemble_size,
        hidden_dim=config.hidden_dim,
        hidden_layers=config.hidden_layers,
        weight_decays=tuple(config.weight_decays),
        max_logvar_init=config.max_logvar_init,
        min_logvar_init=config.min_logvar_init,
        terminal_head=terminal_head,
    )


def _space_dict(space) -> dict[str, Any]:
    return {
        "shape": list(space.shape),
        "low": np.asarray(space.low, dtype=float).tolist(),
        "high": np.asarray(space.high, dtype=float).tolist(),
    }


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("torch", "lightning", "numpy", "gymnasium", "minari", "mbrl-offline-suite"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _metadata(key, data, config, termination, elites, quality, train_seconds, result, n_train) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "key": key,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": {
            "id": data.info.dataset_id,
            "fingerprint": data.fingerprint,
            "env_id": data.info.env_id,
            "transitions": len(data),
        },
        "config": config.to_dict(),
        "obs_dim": data.obs_dim,
        "act_dim": data.act_dim,
        "spaces": {
            "observation": _space_dict(data.info.observation_space),
            "action": _space_dict(data.info.action_space),
        },
        "termination": termination.to_dict(),
        "elites": elites,
        "metrics": {
            "train_seconds": train_seconds,
            "epochs": result.epochs,
            "stopped_early": result.stopped_early,
            "best_epoch_per_member": result.best_epochs,
            "train_transitions": n_train,
            "holdout_transitions": quality["holdout_transitions"],
            "holdout_mse_elites": quality["elite_mean"]["holdout_mse"],
            "holdout_nll_elites": quality["elite_mean"]["holdout_nll"],
        },
        "quality": quality,
        "library_versions": library_versions(),
    }
