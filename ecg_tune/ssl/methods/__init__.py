"""Self-supervised methods (and the supervised baseline): registry and builder.

Adding a method = one file here with a `Method` subclass (declaring `Params`) + one line in METHODS (ecg_tune/plugins.py).
"""

from __future__ import annotations

from typing import Any

from ecg_tune.config import check_params
from ecg_tune.plugins import METHODS
from ecg_tune.ssl.encoders.base import Encoder
from ecg_tune.ssl.methods.base import Augment, Batch, Method


def default_encoder(name: str) -> str:
    """The encoder a method runs on when none is named (its `default_encoder`)."""
    return str(METHODS[name].default_encoder)


def build_method(name: str, params: dict[str, Any], encoder: Encoder) -> Method:
    """Instantiate method `name` around `encoder`; bad keys/values raise ConfigError("method.<key>")."""
    cls = METHODS[name]
    return cls(encoder, check_params("method", cls.Params, params))


__all__ = ["METHODS", "Augment", "Batch", "Method", "build_method", "default_encoder"]
