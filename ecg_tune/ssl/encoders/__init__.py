"""Encoder registry and factory.

`build_encoder(name, params, n_leads, input_length)` checks the flat `encoder.<field>` params against the
encoder's `Params` dataclass (naming any bad key), checks the window is long enough, and builds it.
"""

from __future__ import annotations

from typing import Any

from ecg_tune.config import check_params
from ecg_tune.errors import ConfigError
from ecg_tune.plugins import ENCODERS
from ecg_tune.ssl.encoders.base import Encoder

__all__ = ["ENCODERS", "Encoder", "build_encoder"]


def build_encoder(name: str, params: dict[str, Any], n_leads: int, input_length: int) -> Encoder:
    cls = ENCODERS[name]
    checked = check_params("encoder", cls.Params, params)
    if n_leads < 1:
        raise ConfigError("data.leads", f"encoder {name!r} needs at least one lead, got {n_leads}")
    minimum = cls.min_length(checked)
    if input_length < minimum:
        raise ConfigError(
            "data.window", f"encoder {name!r} needs windows of at least {minimum} samples, got {input_length}"
        )
    encoder: Encoder = cls(checked, n_leads, input_length)
    return encoder
