"""User-facing errors: one clear line that says what went wrong and where."""


class MbrlError(Exception):
    """An error the user caused (bad id, bad path, bad data, bad config).

    The CLI prints ``error: <message>`` and exits with status 2 instead of a
    traceback; library callers can catch it like any exception.
    """


class DatasetError(MbrlError):
    """A dataset cannot be found, loaded or used."""


class ConfigError(MbrlError):
    """A config key or value is not valid."""


class ArtifactError(MbrlError):
    """A stored artifact (dynamics model, rollout store, checkpoint) is missing, corrupt or incompatible."""


class TrainingError(MbrlError):
    """Training broke (non-finite losses or weights): the run stops instead of reporting a score."""
