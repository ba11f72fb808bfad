"""Name → implementation registries, resolved lazily.

A registry maps a short name ("simclr", "xresnet1d50", "timeout") to a "module:attribute" string, so
adding a method, encoder, augmentation, source, protocol, scheduler or sampler is one new file plus one
line in its registry (`ecg_tune/plugins.py`), and listing the names (for validation or `--help`)
imports nothing heavy.

Outside the package, a plug-in registers the same way without editing ecg-tune: either in code,
`METHODS.register("mine", "my_pkg.my_method:MyMethod")`, or as a Python entry point in the group
`ecg_tune.<kind>s` (e.g. `[project.entry-points."ecg_tune.methods"] mine = "my_pkg.my_method:MyMethod"`
in the plug-in's pyproject.toml), which every process (Ray workers included) finds on its path.
Built-in names win over a plug-in of the same name.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from ecg_tune.errors import ConfigError


class Registry(Mapping[str, Any]):
    def __init__(self, kind: str, entries: dict[str, str], *, group: str | None = None):
        self.kind = kind
        self.group = group or f"ecg_tune.{kind}s"  # the entry-point group of plug-ins
        self._entries = dict(entries)
        self._cache: dict[str, Any] = {}
        self._plugins: dict[str, str] = {}
        self._scanned_path: tuple[str, ...] | None = None

    def register(self, name: str, target: str) -> None:
        """Register `name` → `target` ("module:attribute"); the module is imported on first use."""
        module, sep, attr = target.partition(":")
        if not (module and sep and attr):
            raise ValueError(f"{self.kind} {name!r}: expected 'module:attribute', got {target!r}")
        self._entries[name] = target

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def target(self, name: str) -> str:
        """The "module:attribute" string of `name` (nothing imported)."""
        entries = self._all()
        if name not in entries:
            known = ", ".join(sorted(entries))
            raise ConfigError(self.kind, f"unknown {self.kind} {name!r}; known: {known}")
        return entries[name]

    def _all(self) -> dict[str, str]:
        path = tuple(sys.path)
        if path != self._scanned_path:  # entry points are looked up again when the path changes
            from importlib.metadata import entry_points

            self._plugins = {ep.name: ep.value for ep in entry_points(group=self.group)}
            self._scanned_path = path
        return {**self._entries, **{k: v for k, v in self._plugins.items() if k not in self._entries}}

    def __getitem__(self, name: str) -> Any:
        # Cached by target, not by name: a name whose target changed (a plug-in that replaced an entry
        # removed again, a test's registration undone) resolves to its current target.
        target = self.target(name)
        if target not in self._cache:
            module, _, attr = target.partition(":")
            self._cache[target] = getattr(importlib.import_module(module), attr.strip())
        return self._cache[target]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._all()

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def names(self) -> list[str]:
        return sorted(self._all())


@dataclasses.dataclass(frozen=True)
class Description:
    """What `ecg-tune list` prints for one registered name."""

    name: str
    help: str
    params: list[tuple[str, Any]]  # (parameter or config key, default)


def describe(name: str, obj: Any, defaults: Mapping[str, Any] | None = None) -> Description:
    """Name, first docstring line (else its module's) and parameters of a registered object: the fields of its `Params`
    dataclass, or the config keys it names in `uses` (their defaults from `defaults`)."""
    doc = (getattr(obj, "__doc__", None) or "").strip()
    if not doc:  # no docstring of its own: its module's (one plug-in per file)
        doc = (getattr(sys.modules.get(getattr(obj, "__module__", "")), "__doc__", None) or "").strip()
    help_line = doc.splitlines()[0].strip() if doc else ""
    params: list[tuple[str, Any]] = []
    spec = getattr(obj, "Params", None)
    if spec is not None and dataclasses.is_dataclass(spec):
        for f in dataclasses.fields(spec):
            if f.default is not dataclasses.MISSING:
                default: Any = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = None
            params.append((f.name, default))
    for key in getattr(obj, "uses", ()):
        params.append((key, (defaults or {}).get(key)))
    return Description(name, help_line, params)
