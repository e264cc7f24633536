"""Uncertainty features of an ensemble prediction, from the same forward pass.

Which members enter them: the official codes use *all* members.
- MOPO (tianheyu927/mopo ``mopo/models/fake_env.py``, ``FakeEnv.step``): the
  penalty ``np.amax(np.linalg.norm(ensemble_model_stds, axis=2), axis=0)`` is
  taken over ``self.model.predict(inputs, factored=True)``, which returns every
  network of the BNN (``bnn.py``: the factored prediction is over all
  ``num_networks``); only the *sampled* next state uses an elite
  (``random_inds`` draws from the elite indices). The std vector includes the
  reward dimension (targets are [r, delta s]).
- MOReL (aravindr93/mjrl ``projects/morel``): the disagreement is the max over
  all model pairs of the L2 distance between their next-state predictions (the
  reward is not part of it).
- ``ensemble_std``: MOPO's ``_get_logprob`` diagnostic ``np.std(means, 0).mean(-1)``
  (population std over members, averaged over all target dims).
"""

from __future__ import annotations

import torch

from mbrl_core.contracts import ENSEMBLE_STD, MAX_PAIRWISE_DISAGREEMENT, MAX_STD_NORM


def max_std_norm(std: torch.Tensor) -> torch.Tensor:
    """MOPO: max_i ||sigma_i(s, a)||_2 over members i. ``std``: [E, B, D] -> [B]."""
    return torch.linalg.vector_norm(std, dim=-1).amax(dim=0)


def max_pairwise_disagreement(state_means: torch.Tensor) -> torch.Tensor:
    """MOReL: max_{i,j} ||mu_i(s, a) - mu_j(s, a)||_2. ``state_means``: [E, B, S] -> [B]."""
    per_row = state_means.transpose(0, 1)  # [B, E, S]
    # the direct form, not the |a|^2 + |b|^2 - 2ab shortcut that cancels catastrophically for close members
    distances = torch.cdist(per_row, per_row, compute_mode="donot_use_mm_for_euclid_dist")
    return distances.amax(dim=(-2, -1))


def ensemble_std(means: torch.Tensor) -> torch.Tensor:
    """Std over members of the mean predictions, averaged over dims. ``means``: [E, B, D] -> [B]."""
    return means.std(dim=0, unbiased=False).mean(dim=-1)


def uncertainty_features(means: torch.Tensor, stds: torch.Tensor, state_dim: int) -> dict[str, torch.Tensor]:
    """All features by name; ``means``/``stds`` are [E, B, D] with the state part first."""
    return {
        MAX_STD_NORM: max_std_norm(stds),
        MAX_PAIRWISE_DISAGREEMENT: max_pairwise_disagreement(means[..., :state_dim]),
        ENSEMBLE_STD: ensemble_std(means),
    }
