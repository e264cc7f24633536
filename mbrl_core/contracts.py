"""Names shared between the floors above the framework, defined once.

The model writes uncertainty features under these names, the rollout store keeps them, and the
learners read them from ``Batch.uncertainty``; a model-based run passes the context keys in
``LearnerContext.extras``.
"""

from __future__ import annotations

# Uncertainty features of a synthetic transition (one value per row).
MAX_STD_NORM = "max_std_norm"  # MOPO: max over members of the l2 norm of the predicted std
MAX_PAIRWISE_DISAGREEMENT = "max_pairwise_disagreement"  # MOReL: max over member pairs of the mean gap
ENSEMBLE_STD = "ensemble_std"  # std of the members' means, averaged over dimensions
UNCERTAINTY_FEATURES = (MAX_STD_NORM, MAX_PAIRWISE_DISAGREEMENT, ENSEMBLE_STD)

# Keys of LearnerContext.extras set by a model-based run.
DISAGREEMENT_MAX = "disagreement_max"  # max over the dataset's (s, a) of MAX_PAIRWISE_DISAGREEMENT
MODEL_KEY = "dynamics_key"  # the stored model's key, for provenance
