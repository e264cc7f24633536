"""Device selection: CUDA when present, else MPS, else CPU."""

from __future__ import annotations

import torch

from mbrl_core.errors import ConfigError


def select_device(preference: str = "auto") -> torch.device:
    """Return the training device. ``auto`` picks CUDA, then Apple MPS, then CPU."""
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(preference)
    except (RuntimeError, ValueError) as error:
        raise ConfigError(f"unknown device '{preference}' (use auto, cpu, cuda, cuda:1, mps)") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{preference}' requested but CUDA is not available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(
            f"device '{preference}' requested but this machine has {torch.cuda.device_count()} CUDA devices"
        )
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device '{preference}' requested but Apple MPS is not available on this machine")
    if device.type not in {"cpu", "cuda", "mps"}:
        raise ConfigError(f"device '{preference}' is not supported (use auto, cpu, cuda, cuda:1, mps)")
    return device
