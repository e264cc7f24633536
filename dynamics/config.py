"""The dynamics-ensemble config: MBPO/MOPO defaults (see REFERENCES.md, "Dynamics ensemble")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mbrl_core.config import (
    DatasetIdentity,
    PerDatasetChoice,
    apply_per_dataset,
    as_identity,
    bounded,
    build_config,
    choose_per_dataset,
    config_to_dict,
    configs_dir,
    merge,
    read_yaml,
)
from mbrl_core.errors import ConfigError

TERMINATION_CHOICES = ("auto", "never", "learned")
MEMBER_CHOICES = ("all", "elites")
PRECISION_CHOICES = ("32", "bf16")


@dataclass
class DynamicsConfig:
    # ensemble (mopo models/constructor.py: 7 networks, 5 elites, 4 x 200 swish)
    ensemble_size: int = bounded(7, minimum=1)
    elites: int = 5
    hidden_dim: int = bounded(200, minimum=1)
    hidden_layers: int = bounded(4, minimum=1)
    # L2 weight decay of each layer, input to output (mopo constructor)
    weight_decays: list[float] = field(default_factory=lambda: [2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4])
    # learned soft bounds of the log-variance (mopo bnn.py: init 0.5 / -10, 0.01 penalty)
    max_logvar_init: float = 0.5
    min_logvar_init: float = -10.0
    logvar_bound_coef: float = bounded(0.01, minimum=0.0)
    learning_rate: float = 1e-3
    batch_size: int = bounded(256, minimum=1)
    # holdout: min(holdout_ratio * N, max_holdout) transitions, drawn as contiguous
    # segments of holdout_segment steps so open-loop errors can be measured on them
    # (holdout_segment = 1 is MOPO's split of single random transitions)
    holdout_ratio: float = 0.2
    max_holdout: int = 1000
    holdout_segment: int = 10
    # snapshot a member when its holdout MSE improves by more than this fraction; stop once more
    # than `patience` epochs in a row snapshotted no member (MOPO's rule); max_epochs and the
    # optional wall-clock max_fit_minutes are safety bounds the source does not have
    improvement_threshold: float = bounded(0.01, minimum=0.0)
    patience: int = bounded(5, minimum=0)
    max_epochs: int = bounded(400, minimum=1)
    max_fit_minutes: float | None = None
    # MBPO trains each member on its own bootstrap resample of the training split
    bootstrap: bool = True
    # auto = the env's rule when known, else a learned head (data has terminals) or never
    termination: str = "auto"
    # members entering the uncertainty features: the official codes use all of them
    uncertainty_members: str = "all"
    # "32" = float32; "bf16" = bfloat16 autocast for training and rollouts (float32 master weights,
    # optimizer state, losses and outputs)
    precision: str = "32"
    seed: int = 0

    def __post_init__(self) -> None:
        try:  # YAML reads 1e-5 (no dot) as a string
            self.weight_decays = [float(decay) for decay in self.weight_decays]
        except (TypeError, ValueError) as error:
            raise ConfigError(
                f"dynamics.weight_decays must be a list of numbers, got {self.weight_decays!r}"
            ) from error
        if len(self.weight_decays) != self.hidden_layers + 1:
            raise ConfigError(
                f"dynamics.weight_decays has {len(self.weight_decays)} values but "
                f"{self.hidden_layers} hidden layers need {self.hidden_layers + 1}"
            )
        if not 1 <= self.elites <= self.ensemble_size:
            raise ConfigError(
                f"dynamics.elites must be between 1 and ensemble_size={self.ensemble_size}, got {self.elites}"
            )
        if self.termination not in TERMINATION_CHOICES:
            raise ConfigError(
                f"dynamics.termination must be one of {', '.join(TERMINATION_CHOICES)}, got '{self.termination}'"
            )
        if self.uncertainty_members not in MEMBER_CHOICES:
            raise ConfigError(
                f"dynamics.uncertainty_members must be one of {', '.join(MEMBER_CHOICES)}, got "
                f"'{self.uncertainty_members}'"
            )
        self.precision = str(self.precision)  # YAML reads 32 as a number
        if self.precision not in PRECISION_CHOICES:
            raise ConfigError(
                f"dynamics.precision must be one of {', '.join(PRECISION_CHOICES)}, got '{self.precision}'"
            )
        if self.learning_rate <= 0:
            raise ConfigError(f"dynamics.learning_rate must be positive, got {self.learning_rate}")
        if self.max_fit_minutes is not None and self.max_fit_minutes <= 0:
            raise ConfigError(f"dynamics.max_fit_minutes must be positive (or null), got {self.max_fit_minutes}")
        if not 0.0 < self.holdout_ratio < 1.0 or self.max_holdout < 1 or self.holdout_segment < 1:
            raise ConfigError("dynamics holdout: need 0 < holdout_ratio < 1, max_holdout >= 1 and holdout_segment >= 1")

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


def dynamics_per_dataset(dataset: str | DatasetIdentity | None) -> PerDatasetChoice:
    """The entries of ``configs/dynamics.yaml``'s per-dataset settings that ``dataset`` matches
    (the resolver of ``mbrl_core.config``, as for the learner configs)."""
    return choose_per_dataset(read_yaml(configs_dir() / "dynamics.yaml"), as_identity(dataset), "configs/dynamics.yaml")


def dynamics_config_values(
    dataset: str | DatasetIdentity | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``configs/dynamics.yaml`` defaults, then its per-dataset entries for ``dataset``, then ``overrides``."""
    choice = dynamics_per_dataset(dataset)
    return merge(apply_per_dataset(choice.defaults, choice), overrides or {})


def make_dynamics_config(
    config: DynamicsConfig | dict[str, Any] | None, dataset: str | DatasetIdentity | None = None
) -> DynamicsConfig:
    """A DynamicsConfig from an instance, a dict of overrides on the YAML defaults, or None (the defaults)."""
    if isinstance(config, DynamicsConfig):
        return config
    return build_config(DynamicsConfig, dynamics_config_values(dataset, config), "dynamics")
