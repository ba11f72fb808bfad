"""Lead names: case-insensitive normalisation and canonical orders."""

from __future__ import annotations

from collections.abc import Sequence

from ecg_tune.errors import ConfigError

DEFAULT_ORDER: tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6",
)
# The reference code's order (`channel_stoi_default` of tmehari/ecg-selfsupervised).
PAPER_ORDER: tuple[str, ...] = (
    "I", "II", "V1", "V2", "V3", "V4", "V5", "V6", "III", "aVR", "aVL", "aVF",
)
ORDERS = {"default": DEFAULT_ORDER, "paper": PAPER_ORDER}

_BY_LOWER = {name.lower(): name for name in DEFAULT_ORDER}
# Spellings seen in WFDB headers of public corpora.
_ALIASES = {"avr": "aVR", "avl": "aVL", "avf": "aVF", "-avr": "aVR", "mlii": "II", "mli": "I", "mliii": "III"}


def normalise_lead_name(name: str) -> str | None:
    """`AVR`, `avr`, ` aVR ` → `aVR`. Returns None for a name that is not one of the 12 standard leads."""
    key = name.strip().lower().replace(" ", "")
    return _BY_LOWER.get(key) or _ALIASES.get(key)


def lead_order(spec: str | Sequence[str]) -> tuple[str, ...]:
    """A lead order from a one-word name ("default", "paper") or an explicit list of lead names."""
    if isinstance(spec, str):
        if spec in ORDERS:
            return ORDERS[spec]
        spec = [s for s in spec.split(",") if s.strip()]
    names = []
    for s in spec:
        lead = normalise_lead_name(s)
        if lead is None:
            raise ConfigError("lead_order", f"unknown lead name {s!r}")
        if lead in names:
            raise ConfigError("lead_order", f"lead {lead!r} given twice")
        names.append(lead)
    if not names:
        raise ConfigError("lead_order", "no leads given")
    return tuple(names)
