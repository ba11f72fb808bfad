"""Name → implementation registries, resolved lazily.

A registry maps a short name ("simclr", "xresnet1d50", "timeout") to a "module:attribute" string, so
adding a method, encoder or augmentation is one new file plus one line in its registry, and listing
the names (for validation or `--help`) imports nothing heavy.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from ecg_tune.errors import ConfigError


class Registry(Mapping[str, Any]):
    def __init__(self, kind: str, entries: dict[str, str]):
        self.kind = kind
        self._entries = dict(entries)
        self._cache: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._entries:
            known = ", ".join(sorted(self._entries))
            raise ConfigError(self.kind, f"unknown {self.kind} {name!r}; known: {known}")
        if name not in self._cache:
            module, _, attr = self._entries[name].partition(":")
            self._cache[name] = getattr(importlib.import_module(module), attr)
        return self._cache[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return sorted(self._entries)
