"""The framework: data, storage, the one trainer, evaluation, config, CLI and reports.

`mbrl_core` never imports `dynamics` or `policies` at module level; the CLI
resolves learners and models by name through registries.
"""

from mbrl_core.errors import MbrlError

__all__ = ["MbrlError"]
__version__ = "0.1.0"
