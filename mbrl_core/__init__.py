"""The framework (floor 1): data, batches, samplers, the model buffer, the Zarr rollout store, the one
trainer, evaluation, config resolution, atomic writes and errors.

It imports nothing of this project above it: the model and the learners reach it through
protocols (``Learner``, ``Sampler``, the rollout generator) and the constants in ``mbrl_core.contracts``.
"""

from mbrl_core.errors import MbrlError

__all__ = ["MbrlError"]
__version__ = "0.1.0"
