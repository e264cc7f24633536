"""The quality report of a trained ensemble, measured on the holdout split.

- one-step holdout MSE and Gaussian NLL per member (NLL per target dim, nats,
  constant included: 0.5 (log 2 pi + log sigma^2 + (y - mu)^2 / sigma^2));
- calibration: fraction of targets inside mu +- 1 sigma and mu +- 2 sigma
  (a calibrated Gaussian gives 0.683 and 0.954);
- open-loop error: from the first state of each held-out segment, a member's
  mean model is rolled forward with the logged actions; the MSE of its state
  after h steps against the logged one (h = 1, 5, 10; segments shorter than h
  are skipped).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from dynamics.datamodule import TrainingSplit, model_inputs
from dynamics.ensemble import GaussianEnsemble, member_mse, precision_context

HORIZONS = (1, 5, 10)
COLUMNS = ("holdout_mse", "holdout_nll", "within_1_sigma", "within_2_sigma") + tuple(
    f"open_loop_mse_h{h}" for h in HORIZONS
)


@torch.no_grad()
def member_quality(ensemble: GaussianEnsemble, split: TrainingSplit, precision: str = "32") -> dict[str, list[float]]:
    """Every metric, one value per member, measured at the ``precision`` the model is used at."""
    device = ensemble.input_mean.device
    with precision_context(precision, device):
        return _member_quality(ensemble, split.to(device))


def _member_quality(ensemble: GaussianEnsemble, split: TrainingSplit) -> dict[str, list[float]]:
    out = ensemble(split.holdout_inputs)
    error = out.mean - split.holdout_targets
    z = error.abs() * torch.exp(-0.5 * out.logvar)
    nll = 0.5 * (math.log(2 * math.pi) + out.logvar + error.pow(2) * torch.exp(-out.logvar))
    per_member = {
        "holdout_mse": member_mse(out.mean, split.holdout_targets).tolist(),
        "holdout_nll": nll.mean(dim=(1, 2)).tolist(),
        "within_1_sigma": (z <= 1).float().mean(dim=(1, 2)).tolist(),
        "within_2_sigma": (z <= 2).float().mean(dim=(1, 2)).tolist(),
    }
    open_loop = {f"h{h}": _open_loop_mse(ensemble, split, h) for h in HORIZONS}
    per_member.update({f"open_loop_mse_{name}": values for name, values in open_loop.items() if values is not None})
    return per_member


def summarize_quality(
    per_member: dict[str, list[float]], elites: list[int], holdout_transitions: int
) -> dict[str, Any]:
    """The stored report: per-member values and their mean over the elites."""
    elite_mean = {name: sum(values[m] for m in elites) / len(elites) for name, values in per_member.items()}
    return {"per_member": per_member, "elite_mean": elite_mean, "holdout_transitions": holdout_transitions}


def _open_loop_mse(ensemble: GaussianEnsemble, split: TrainingSplit, horizon: int) -> list[float] | None:
    usable = split.holdout_segment_lengths >= horizon
    if not usable.any():
        return None
    starts = split.holdout_segment_starts[usable]
    s = split.obs_dim
    states = split.holdout_inputs[starts, :s].unsqueeze(0).expand(ensemble.ensemble_size, -1, -1)
    for step in range(horizon):
        actions = split.holdout_inputs[starts + step, s:].unsqueeze(0).expand(ensemble.ensemble_size, -1, -1)
        states = states + ensemble(model_inputs(states, actions)).mean[..., :s]
    last = starts + horizon - 1
    logged = split.holdout_inputs[last, :s] + split.holdout_targets[last, :s]
    return (states - logged).pow(2).mean(dim=(1, 2)).tolist()


def format_quality(quality: dict[str, Any], elites: list[int]) -> str:
    """A per-member table (elites marked) plus the elite mean."""
    columns = [name for name in COLUMNS if name in quality["per_member"]]
    header = ["member"] + columns
    rows = []
    for member in range(len(quality["per_member"][columns[0]])):
        label = f"{member}{'*' if member in elites else ''}"
        rows.append([label] + [_number(quality["per_member"][c][member]) for c in columns])
    rows.append(["elites"] + [_number(quality["elite_mean"][c]) for c in columns])
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(str(cell).rjust(width) for cell, width in zip(row, widths)) for row in [header] + rows]
    return "\n".join(lines + ["(* = elite; calibrated Gaussian: within_1_sigma 0.683, within_2_sigma 0.954)"])


def _number(value: float) -> str:
    return f"{value:.4g}"


def plot_holdout_error(quality: dict[str, Any], elites: list[int], path: str | Path, title: str = "") -> Path:
    """A bar chart of holdout MSE and NLL per member (elites in a darker colour), written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    members = list(range(len(quality["per_member"]["holdout_mse"])))
    colours = ["tab:blue" if m in elites else "tab:gray" for m in members]
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for axis, metric in zip(axes, ("holdout_mse", "holdout_nll")):
        axis.bar(members, quality["per_member"][metric], color=colours)
        axis.set_xlabel("member (blue = elite)")
        axis.set_ylabel(metric.replace("_", " "))
        axis.set_xticks(members)
    figure.suptitle(title or "holdout error per member")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
