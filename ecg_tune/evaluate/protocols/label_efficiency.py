"""Label efficiency (§6.4): the curve protocol trained on the first n training folds."""

from __future__ import annotations

from typing import Any

from ecg_tune.evaluate.curves import label_efficiency
from ecg_tune.evaluate.protocols.base import Protocol, ProtocolSetup
from ecg_tune.evaluate.results import CurveResult


class LabelEfficiency(Protocol):
    """Test AUC of `curve_protocol` trained on the first n of folds 1-8 for each n of label_folds."""

    uses = ("evaluation.label_folds", "evaluation.curve_protocol")

    def run(self, model: Any, dataset: Any, setup: ProtocolSetup) -> CurveResult:
        return label_efficiency(model, dataset, **setup.keywords())
