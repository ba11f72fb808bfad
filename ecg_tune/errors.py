"""Domain exceptions. Each names the file, record or config key it is about.

The CLI turns any `EcgTuneError` into one clear line and a non-zero exit (no traceback for bad input).
"""

from __future__ import annotations


class EcgTuneError(Exception):
    """Base class of every error the platform raises on purpose."""


class ConfigError(EcgTuneError, ValueError):
    """A configuration or search-space value is wrong. `key` is the dotted path of the bad key."""

    def __init__(self, key: str, reason: str):
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}" if key else reason)


class RecordError(EcgTuneError):
    """A source record cannot be read or is not usable. Becomes a quarantine entry during ingest."""

    def __init__(self, path: str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class DatasetError(EcgTuneError):
    """A dataset (shards + manifest) is missing, corrupt or incompatible."""


class CheckpointError(EcgTuneError):
    """A checkpoint is corrupt, from another encoder/lead set/version, or otherwise unusable."""
