"""Source readers: one file per corpus layout, one line each in `SOURCES` (ecg_tune/plugins.py).

A source class has `name`, `default_label_set`, `list_records(root) -> list[RecordRef]`,
`read(ref) -> RawRecord`, `version(root) -> str` and `origin_id(record) -> str` (see `base.py`).
Its constructor takes the source's options (`ingest(..., which=500)` → `PtbxlSource(which=500)`).
"""

from __future__ import annotations

import inspect
from typing import Any

from ecg_tune.data.sources.base import RecordRef, Source
from ecg_tune.errors import ConfigError
from ecg_tune.plugins import SOURCES


def build_source(name: str, options: dict[str, Any] | None = None) -> Source:
    """An instance of source `name` with its options; an unknown option is a ConfigError naming it."""
    cls = SOURCES[name]
    options = dict(options or {})
    params = inspect.signature(cls).parameters
    for key in options:
        if key not in params:
            known = ", ".join(params) or "(none)"
            raise ConfigError(f"source.{key}", f"unknown option of source {name!r}; known: {known}")
    return cls(**options)


__all__ = ["SOURCES", "RecordRef", "Source", "build_source"]
