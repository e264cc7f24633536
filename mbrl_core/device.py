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
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{preference}' requested but CUDA is not available on this machine")
    return device
