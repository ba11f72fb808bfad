"""Domain exceptions. Each names the file, record or config key it is about.

The CLI turns any `EcgTuneError` into one clear line and a non-zero exit (no traceback for bad input).

Every exception here survives `pickle` and `copy.copy` with its message and fields intact: Ray
copies and pickles the exception a trial raises on its way to the driver, and an exception whose
`__init__` takes other arguments than `self.args` would come out as an unrelated `TypeError`
(`ConfigError.__init__() missing 1 required positional argument: 'reason'`).
"""

from __future__ import annotations

from typing import Any


class EcgTuneError(Exception):
    """Base class of every error the platform raises on purpose."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt without calling the subclass's __init__ (whose arguments differ from `self.args`
        # in most subclasses, also those defined in other modules): same class, args, attributes.
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


def _rebuild(cls: type[EcgTuneError], args: tuple[Any, ...], state: dict[str, Any]) -> EcgTuneError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


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
