"""PTB-XL evaluation of encoders: metrics, noise levels and the protocols of Mehari & Strodthoff (2022).

Layer rule: imports ssl, data, torch, sklearn/scipy; never ray, optuna or mlflow.

- `metrics`: `macro_auc`, `bootstrap_ci`, `aggregate_windows`.
- `noise`: `NOISE_LEVELS` (L1-L6), `add_noise`.
- `protocols`: `linear`, `finetune`, `supervised`, `random`, `label_efficiency`, `noise_robustness`,
  `quick_probe`, `run_protocol`, `evaluate_checkpoint`, `format_result`.
- `results`: `ProtocolResult`, `CurveResult`, `CurvePoint`.
Internals: `task` (folds/targets/leads), `scoring` (sliding windows → record scores), `heads`
(classifier, optimiser groups, training loop with fold-9 selection), `runner`, `curves`, `probe`.
"""

from __future__ import annotations

from ecg_tune.evaluate.metrics import aggregate_windows, bootstrap_ci, macro_auc
from ecg_tune.evaluate.noise import NOISE_LEVELS, add_noise
from ecg_tune.evaluate.protocols import (
    PROTOCOLS,
    evaluate_checkpoint,
    finetune,
    format_result,
    label_efficiency,
    linear,
    noise_robustness,
    quick_probe,
    random,
    run_protocol,
    supervised,
)
from ecg_tune.evaluate.results import CurvePoint, CurveResult, ProtocolResult

__all__ = [
    "NOISE_LEVELS",
    "PROTOCOLS",
    "CurvePoint",
    "CurveResult",
    "ProtocolResult",
    "add_noise",
    "aggregate_windows",
    "bootstrap_ci",
    "evaluate_checkpoint",
    "finetune",
    "format_result",
    "label_efficiency",
    "linear",
    "macro_auc",
    "noise_robustness",
    "quick_probe",
    "random",
    "run_protocol",
    "supervised",
]
