"""Mean/std normalization statistics, shared by learners and the dynamics ensemble."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Normalizer:
    """Per-dimension affine normalization ``(x - mean) / std``.

    ``eps`` keeps constant dimensions finite (TD3-BC adds 1e-3 to the std).
    """

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(cls, values: torch.Tensor, eps: float = 1e-3) -> Normalizer:
        values = values.double()
        return cls(values.mean(0).float(), (values.std(0, unbiased=False) + eps).float())

    @classmethod
    def identity(cls, dim: int) -> Normalizer:
        return cls(torch.zeros(dim), torch.ones(dim))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean

    def to(self, device: torch.device | str) -> Normalizer:
        return Normalizer(self.mean.to(device), self.std.to(device))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean.cpu(), "std": self.std.cpu()}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> Normalizer:
        return cls(state["mean"].float(), state["std"].float())
