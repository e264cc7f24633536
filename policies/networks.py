"""Networks shared by every learner: MLP actors, the vectorized critic ensemble, value heads.

Conventions (all learners):
- Networks see *normalized* observations (the learner normalizes once per update)
  and actions in the unit box [-1, 1]^d (the learner maps env units in and out),
  so the papers' MuJoCo settings (max_action = 1) carry over unchanged.
- Critic ensembles (twin Q, larger ensembles) are one module with batched weights
  ``[E, in, out]``: every member runs in one ``torch.baddbmm`` per layer.
- Under bfloat16 autocast (``trainer.precision: bf16``) the hidden layers run in
  bfloat16 and every output layer in float32, so Q-values, means and log-stds
  keep float32's mantissa (a Q of 300 in bfloat16 is only known to ±1).
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from mbrl_core.errors import ConfigError
from mbrl_core.normalization import Normalizer

LOG_2 = math.log(2.0)


class ObservationNormalizer(nn.Module):
    """Fixed ``(obs - mean) / std`` with buffers, so the statistics travel with the state dict."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, normalizer: Normalizer, enabled: bool = True) -> None:
        super().__init__()
        dim = normalizer.mean.numel()
        mean = normalizer.mean if enabled else torch.zeros(dim)
        std = normalizer.std if enabled else torch.ones(dim)
        self.register_buffer("mean", mean.detach().clone().float())
        self.register_buffer("std", std.detach().clone().float())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return (observations - self.mean) / self.std


class ActionScaler(nn.Module):
    """Affine map between the environment's action box and the unit box [-1, 1]^d."""

    center: torch.Tensor
    half_range: torch.Tensor

    def __init__(self, low: torch.Tensor, high: torch.Tensor) -> None:
        super().__init__()
        low, high = low.detach().float().reshape(-1), high.detach().float().reshape(-1)
        if not (torch.isfinite(low).all() and torch.isfinite(high).all() and (high > low).all()):
            raise ConfigError(
                f"learners need a bounded action box with high > low; got low={low.tolist()}, high={high.tolist()}"
            )
        self.register_buffer("center", (high + low) / 2)
        self.register_buffer("half_range", (high - low) / 2)

    def to_unit(self, actions: torch.Tensor) -> torch.Tensor:
        return (actions - self.center) / self.half_range

    def to_env(self, unit_actions: torch.Tensor) -> torch.Tensor:
        return unit_actions.clamp(-1.0, 1.0) * self.half_range + self.center


class Float32Linear(nn.Linear):
    """A network's output layer: float32 even under bfloat16 autocast (it costs a sliver of the FLOPs)."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        with torch.autocast(inputs.device.type, enabled=False):
            return super().forward(inputs.float())


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int) -> nn.Sequential:
    """Linear-ReLU stack (the papers' networks: ReLU MLPs, PyTorch default init)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU(inplace=True)]
        in_dim = width
    layers.append(Float32Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class EnsembleLinear(nn.Module):
    """``E`` independent linear layers applied with one batched matmul: ``[E, N, in] -> [E, N, out]``."""

    def __init__(self, members: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(members, 1, out_dim))
        # Same distribution as nn.Linear's default, member by member.
        bound = 1.0 / math.sqrt(in_dim)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    @torch.no_grad()
    def orthogonal_(self, gain: float) -> None:
        members, in_dim, out_dim = self.weight.shape
        for member in range(members):
            # Drawn as [out, in] like nn.Linear's weight, stored transposed.
            self.weight[member] = nn.init.orthogonal_(torch.empty(out_dim, in_dim), gain=gain).T
        self.bias.zero_()


# Rows per pass when a critic evaluates many actions per state (CQL's 30 x 256 proposals): 1024 rows
# of a 256-wide float32 layer are 1 MB, a core's L2 here; measured on CQL's update (benchmarks/
# throughput.py), one pass over all 7680 rows was 1.3x slower than passes of 1024.
MANY_ACTIONS_CHUNK_ROWS = 1024


class CriticEnsemble(nn.Module):
    """``E`` Q-networks Q_e(s, a) (or value networks V_e(s) when ``act_dim == 0``) in one module.

    ``forward(obs [N, o], actions [N, a] or [N, K, a]) -> [E, N] or [E, N, K]``.
    ``frozen=True`` uses detached weights: gradients reach the actions (an
    actor's loss) but never the critic's parameters.
    """

    def __init__(
        self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], members: int = 2, orthogonal_init: bool = False
    ) -> None:
        super().__init__()
        if not hidden:
            raise ConfigError("hidden_sizes needs at least one width (a critic is an MLP)")
        self.obs_dim, self.act_dim, self.members = obs_dim, act_dim, members
        widths = (obs_dim + act_dim, *hidden, 1)
        layers = [EnsembleLinear(members, i, o) for i, o in zip(widths[:-1], widths[1:])]
        if orthogonal_init:
            # CORL's CQL: orthogonal hidden layers with gain sqrt(2), output layer gain 1e-2, zero biases.
            for layer in layers[:-1]:
                layer.orthogonal_(math.sqrt(2.0))
            layers[-1].orthogonal_(1e-2)
        self.layers = nn.ModuleList(layers)

    def forward(
        self,
        observations: torch.Tensor,
        actions: torch.Tensor | None = None,
        frozen: bool = False,
        members: int | None = None,
    ) -> torch.Tensor:
        """``members=k`` evaluates only the first k members (TD3's actor uses Q1 alone)."""
        layers = cast(list[EnsembleLinear], list(self.layers))
        params: list[tuple[torch.Tensor, torch.Tensor]] = [(layer.weight, layer.bias) for layer in layers]
        if members is not None:
            params = [(w[:members], b[:members]) for w, b in params]
        if frozen:
            params = [(w.detach(), b.detach()) for w, b in params]
        if actions is None or actions.dim() == 2:
            inputs = observations if actions is None else torch.cat([observations, actions], dim=-1)
            return self.values(inputs, params)
        # K actions per state: each state's observation repeated beside its actions. (Computing the
        # observation's first-layer product once per state costs more than it saves at these widths:
        # the broadcast sum and its backward move 4x the first layer's data.)
        rows, k, _ = actions.shape
        inputs = torch.cat([observations.unsqueeze(1).expand(-1, k, -1), actions], dim=-1).flatten(0, 1)
        chunks = inputs.split(MANY_ACTIONS_CHUNK_ROWS)
        return torch.cat([self.values(chunk, params) for chunk in chunks], dim=-1).view(-1, rows, k)

    @staticmethod
    def values(inputs: torch.Tensor, params: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """``[rows, in] -> [E, rows]``: every member's MLP, one batched matmul per layer."""
        (w_in, b_in), *hidden, (w_out, b_out) = params
        x = torch.baddbmm(b_in, inputs.expand(w_in.shape[0], *inputs.shape), w_in)
        for weight, bias in hidden:
            x = torch.baddbmm(bias, torch.relu_(x), weight)  # in place: baddbmm saves its inputs, not its output
        with torch.autocast(x.device.type, enabled=False):  # values in float32 (see the module docstring)
            return torch.baddbmm(b_out, torch.relu_(x).float(), w_out).squeeze(-1)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Diagonal Gaussian log-density, summed over the last dimension."""
    z = (x - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def tanh_log_det_jacobian(pre_tanh: torch.Tensor) -> torch.Tensor:
    """log |d tanh(u)/du| = log(1 - tanh(u)^2), in the numerically stable form 2 (log 2 - u - softplus(-2u))."""
    return (2.0 * (LOG_2 - pre_tanh - F.softplus(-2.0 * pre_tanh))).sum(-1)


class SquashedGaussian:
    """tanh(N(mean, std)): SAC's policy distribution over the unit action box."""

    def __init__(self, mean: torch.Tensor, log_std: torch.Tensor) -> None:
        self.mean, self.log_std = mean, log_std

    def rsample(self, samples: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterized (action, log-prob); ``samples=K`` draws ``[N, K, a]`` actions per state."""
        mean, log_std = self.mean, self.log_std
        if samples is not None:
            mean = mean.unsqueeze(1).expand(-1, samples, -1)
            log_std = log_std.unsqueeze(1).expand(-1, samples, -1)
        pre_tanh = mean + torch.randn_like(mean) * log_std.exp()
        log_prob = gaussian_log_prob(pre_tanh, mean, log_std) - tanh_log_det_jacobian(pre_tanh)
        return torch.tanh(pre_tanh), log_prob

    def log_prob(self, actions: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
        """Log-density of given unit-box actions (clipped inside the open box for atanh)."""
        pre_tanh = torch.atanh(actions.clamp(-1.0 + eps, 1.0 - eps))
        return gaussian_log_prob(pre_tanh, self.mean, self.log_std) - tanh_log_det_jacobian(pre_tanh)

    def mode(self) -> torch.Tensor:
        return torch.tanh(self.mean)

    def detach(self) -> SquashedGaussian:
        return SquashedGaussian(self.mean.detach(), self.log_std.detach())

    def rows(self, index: torch.Tensor) -> SquashedGaussian:
        return SquashedGaussian(self.mean[index], self.log_std[index])


class TanhGaussianActor(nn.Module):
    """SAC's actor: an MLP emitting mean and state-dependent log-std of a tanh-squashed Gaussian.

    ``log_std = multiplier * raw + offset`` with both scalars learned (CORL's CQL
    actor, from young-geng/CQL; offset -1 there, 0 gives plain SAC), clamped to
    [-20, 2] as in SAC implementations.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: tuple[int, ...],
        log_std_offset: float = 0.0,
        small_output_init: bool = False,
    ) -> None:
        super().__init__()
        self.act_dim = act_dim
        self.net = mlp(obs_dim, hidden, 2 * act_dim)
        self.log_std_multiplier = nn.Parameter(torch.tensor(1.0))
        self.log_std_offset = nn.Parameter(torch.tensor(float(log_std_offset)))
        if small_output_init:
            # CORL's CQL actor: output layer xavier-uniform with gain 1e-2, zero bias.
            output = self.net[-1]
            assert isinstance(output, Float32Linear)
            nn.init.xavier_uniform_(output.weight, gain=1e-2)
            nn.init.zeros_(output.bias)

    def forward(self, observations: torch.Tensor) -> SquashedGaussian:
        mean, raw_log_std = self.net(observations).split(self.act_dim, dim=-1)
        log_std = (self.log_std_multiplier * raw_log_std + self.log_std_offset).clamp(-20.0, 2.0)
        return SquashedGaussian(mean, log_std)


class GaussianActor(nn.Module):
    """A Gaussian with a state-independent learned log-std (IQL, AWAC).

    IQL squashes the *mean* with tanh but not the samples (official
    ``NormalTanhPolicy(state_dependent_std=False, tanh_squash_distribution=False)``);
    AWAC (CORL) leaves the mean unbounded.
    """

    def __init__(
        self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], tanh_mean: bool, log_std_bounds: tuple[float, float]
    ) -> None:
        super().__init__()
        self.net = mlp(obs_dim, hidden, act_dim)
        self.log_std = nn.Parameter(torch.zeros(act_dim))
        self.tanh_mean = tanh_mean
        self.log_std_bounds = log_std_bounds

    def forward(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean [N, a], log_std [a])."""
        mean = self.net(observations)
        return (torch.tanh(mean) if self.tanh_mean else mean), self.log_std.clamp(*self.log_std_bounds)


class DeterministicActor(nn.Module):
    """a = tanh(MLP(s)) in the unit box (TD3-BC, BC)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.net = mlp(obs_dim, hidden, act_dim)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(observations))
