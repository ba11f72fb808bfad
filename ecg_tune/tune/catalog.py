"""`ecg-tune list`: every registered plug-in with its parameters, defaults and one line of help.

Read from the registries (ecg_tune/plugins.py): a plug-in's `Params` dataclass gives its parameters
and defaults, or its `uses` names the config keys it reads (defaults from `TrialConfig` and the sweep
spec's `budget:` / `searcher:` sections); the first line of its docstring is the help.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ecg_tune.config import TrialConfig
from ecg_tune.plugins import KINDS
from ecg_tune.registry import Description, describe


def config_defaults() -> dict[str, Any]:
    """Default of every flat config key a plug-in may name in `uses`."""
    from ecg_tune.tune.spaces import Budget, Searcher

    out: dict[str, Any] = dict(TrialConfig().to_flat())
    for section, cls in (("budget", Budget), ("searcher", Searcher)):
        out.update({f"{section}.{k}": v for k, v in dataclasses.asdict(cls()).items()})
    return out


def describe_kind(kind: str) -> list[Description]:
    """One Description per registered name of `kind` (a key of plugins.KINDS), in registry order."""
    registry = KINDS[kind]
    defaults = config_defaults()
    return [describe(name, registry[name], defaults) for name in registry]


def format_kind(kind: str) -> str:
    lines = [f"{kind}:"]
    for d in describe_kind(kind):
        lines.append(f"  {d.name:<22} {d.help}".rstrip())
        if d.params:
            lines.append("      " + ", ".join(f"{k}={_show(v)}" for k, v in d.params))
    return "\n".join(lines)


def _show(value: Any, width: int = 40) -> str:
    text = ",".join(str(v) for v in value) if isinstance(value, list | tuple) else str(value)
    return text if len(text) <= width else text[: width - 3] + "..."
