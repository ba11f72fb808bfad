"""Self-supervised methods (and the supervised baseline): registry and builder.

Adding a method = one file here with a `Method` subclass (declaring `Params`) + one line in METHODS.
"""

from __future__ import annotations

from typing import Any

from ecg_tune.config import check_params
from ecg_tune.registry import Registry
from ecg_tune.ssl.encoders.base import Encoder
from ecg_tune.ssl.methods.base import Augment, Batch, Method

METHODS = Registry(
    "method",
    {
        "simclr": "ecg_tune.ssl.methods.simclr:SimCLR",
        "byol": "ecg_tune.ssl.methods.byol:BYOL",
        "swav": "ecg_tune.ssl.methods.swav:SwAV",
        "cpc": "ecg_tune.ssl.methods.cpc:CPC",
        "supervised": "ecg_tune.ssl.methods.supervised:Supervised",
        "mae": "ecg_tune.ssl.methods.mae:MAE",
        "jepa": "ecg_tune.ssl.methods.jepa:JEPA",
        "cmsc": "ecg_tune.ssl.methods.cmsc:CMSC",
    },
)


def default_encoder(name: str) -> str:
    """The encoder a method runs on when none is named (its `default_encoder`)."""
    return str(METHODS[name].default_encoder)


def build_method(name: str, params: dict[str, Any], encoder: Encoder) -> Method:
    """Instantiate method `name` around `encoder`; bad keys/values raise ConfigError("method.<key>")."""
    cls = METHODS[name]
    return cls(encoder, check_params("method", cls.Params, params))


__all__ = ["METHODS", "Augment", "Batch", "Method", "build_method", "default_encoder"]
