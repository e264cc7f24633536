"""A probabilistic dynamics ensemble with batched weights (plain torch, no Lightning).

Every member maps a normalized input x = (s, a) to a diagonal Gaussian over the
target y = (s' - s, r):

    h_0 = (x - mu_x) / sigma_x,   h_l = swish(h_{l-1} W_l + b_l),   [m, u] = h_L W_out + b_out
    log sigma^2 = max_lv - softplus(max_lv - u);   log sigma^2 = min_lv + softplus(log sigma^2 - min_lv)

(the soft bounds of PETS/MBPO/MOPO ``bnn.py``; max_lv, min_lv are learned). The
E members are one module: each layer's weights are an [E, in, out] tensor and a
layer is one batched matmul. An optional extra output is a terminal logit per
member (the learned termination head for unknown envs).
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class EnsembleOutput:
    mean: torch.Tensor  # [E, B, D] predicted (delta obs, reward)
    logvar: torch.Tensor  # [E, B, D]
    terminal_logit: torch.Tensor | None  # [E, B] when the learned head is on


class GaussianEnsemble(nn.Module):
    input_mean: torch.Tensor  # buffers, declared for the type checker
    input_std: torch.Tensor

    def __init__(
        self,
        input_dim: int,
        target_dim: int,
        ensemble_size: int = 7,
        hidden_dim: int = 200,
        hidden_layers: int = 4,
        weight_decays: tuple[float, ...] = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4),
        max_logvar_init: float = 0.5,
        min_logvar_init: float = -10.0,
        terminal_head: bool = False,
    ) -> None:
        super().__init__()
        self.input_dim, self.target_dim, self.ensemble_size = input_dim, target_dim, ensemble_size
        self.terminal_head = terminal_head
        self.weight_decays = tuple(float(d) for d in weight_decays)
        output_dim = 2 * target_dim + int(terminal_head)
        sizes = [input_dim] + [hidden_dim] * hidden_layers + [output_dim]
        self.weights = nn.ParameterList(
            nn.Parameter(_init_weight(ensemble_size, n_in, n_out)) for n_in, n_out in zip(sizes, sizes[1:])
        )
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(ensemble_size, 1, n_out)) for n_out in sizes[1:])
        self.max_logvar = nn.Parameter(torch.full((target_dim,), float(max_logvar_init)))
        self.min_logvar = nn.Parameter(torch.full((target_dim,), float(min_logvar_init)))
        # input normalization fitted on the training split (buffers: saved, moved, never trained)
        self.register_buffer("input_mean", torch.zeros(input_dim))
        self.register_buffer("input_std", torch.ones(input_dim))

    def set_input_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.input_mean.copy_(mean)
        self.input_std.copy_(std)

    def forward(self, inputs: torch.Tensor) -> EnsembleOutput:
        """``inputs``: raw (s, a), [B, in] (shared by all members) or [E, B, in] (one batch per member)."""
        h = (inputs - self.input_mean) / self.input_std
        if h.dim() == 2:
            h = h.unsqueeze(0).expand(self.ensemble_size, -1, -1)
        last = len(self.weights) - 1
        # in-place activations are safe (and save memory traffic) when no graph is recorded
        inplace = not torch.is_grad_enabled()
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(bias, h, weight)
            if index < last:
                h = F.silu(h, inplace=inplace)
        h = h.float()  # under bf16 autocast the heads and every loss stay float32
        d = self.target_dim
        mean, raw_logvar = h[..., :d], h[..., d : 2 * d]
        logvar = self.max_logvar - F.softplus(self.max_logvar - raw_logvar)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        terminal_logit = h[..., 2 * d] if self.terminal_head else None
        return EnsembleOutput(mean, logvar, terminal_logit)

    def weight_decay_loss(self) -> torch.Tensor:
        """sum_l decay_l * ||W_l||^2 / 2 over all members (TF's l2_loss, as in MOPO's FC layers)."""
        return sum(decay * weight.pow(2).sum() / 2 for decay, weight in zip(self.weight_decays, self.weights))

    def logvar_bound_loss(self, coef: float) -> torch.Tensor:
        """coef * (sum max_lv - sum min_lv): keeps the learned bounds tight."""
        return coef * (self.max_logvar.sum() - self.min_logvar.sum())

    @torch.no_grad()
    def member_state(self, member: int) -> dict[str, torch.Tensor]:
        """A copy of one member's weights (for per-member snapshots)."""
        tensors = {f"w{i}": w[member] for i, w in enumerate(self.weights)}
        tensors.update({f"b{i}": b[member] for i, b in enumerate(self.biases)})
        return {name: t.detach().clone() for name, t in tensors.items()}

    @torch.no_grad()
    def load_member_state(self, member: int, state: dict[str, torch.Tensor]) -> None:
        for i, w in enumerate(self.weights):
            w[member].copy_(state[f"w{i}"])
        for i, b in enumerate(self.biases):
            b[member].copy_(state[f"b{i}"])

    def flops_per_sample(self) -> int:
        """Multiply-add FLOPs of one forward pass of one input through all members."""
        return sum(2 * self.ensemble_size * w.shape[1] * w.shape[2] for w in self.weights)


def precision_context(precision: str, device: torch.device) -> AbstractContextManager:
    """The autocast of a DynamicsConfig.precision for inference: bfloat16 matmuls under "bf16"
    (the weights stay float32), nothing under "32"."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _init_weight(ensemble_size: int, n_in: int, n_out: int) -> torch.Tensor:
    # truncated normal with std 1 / (2 sqrt(fan_in)), as the MBPO/MOPO FC layers
    weight = torch.empty(ensemble_size, n_in, n_out)
    std = 1.0 / (2.0 * math.sqrt(n_in))
    return nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


def gaussian_nll(mean: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-member Gaussian NLL up to constants, MOPO's form: mean over rows and dims of
    (mu - y)^2 / sigma^2 + log sigma^2.  Returns [E]."""
    return ((mean - target).pow(2) * torch.exp(-logvar) + logvar).mean(dim=(-2, -1))


def member_mse(mean: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-member mean squared error over rows and dims. Returns [E]."""
    return (mean - target).pow(2).mean(dim=(-2, -1))
