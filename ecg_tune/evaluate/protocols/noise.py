"""Robustness to physiological noise (§6.5): a model trained on clean data, scored on noised windows."""

from __future__ import annotations

from typing import Any

from ecg_tune.evaluate.curves import noise_robustness
from ecg_tune.evaluate.protocols.base import Protocol, ProtocolSetup
from ecg_tune.evaluate.results import CurveResult


class NoiseRobustness(Protocol):
    """Val/test AUC of a `curve_protocol` model trained on clean data, at noise levels L0-L6."""

    uses = ("evaluation.noise_levels", "evaluation.curve_protocol")

    def run(self, model: Any, dataset: Any, setup: ProtocolSetup) -> CurveResult:
        return noise_robustness(model, dataset, **setup.keywords())
