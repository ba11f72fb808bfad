"""Result records of the evaluation protocols: JSON-serialisable, with a small terminal table."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ecg_tune.evaluate.heads import Classifier

METRIC = "record-level macro ROC-AUC (undefined class = 0.5)"


def _clean(value: Any) -> Any:
    """JSON-safe copy: numpy scalars → Python numbers, tuples → lists, NaN → None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):  # numpy / torch scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _ci_or_none(ci: Any) -> Any:
    """A CI without finite bounds (no bootstrap) is written as null, not as [null, null]."""
    if ci is None or not all(isinstance(v, int | float) and math.isfinite(v) for v in ci):
        return None
    return [float(v) for v in ci]


@dataclass
class ProtocolResult:
    protocol: str  # linear | finetune | supervised | random
    label_set: str
    n_classes: int
    val_auc: float  # at the selected epoch (fold 9; what selection maximised)
    test_auc: float  # fold 10, scored once with the selected state
    test_ci: tuple[float, float]  # percentile bootstrap over test records
    per_class: dict[str, float]  # test AUC per label code
    selected_epoch: int  # 1-based count of training epochs of the selected state
    history: list[dict[str, Any]]  # {epoch, phase, train_loss, val_auc} per epoch
    settings: dict[str, Any]
    n_train: int
    n_val: int
    n_test: int
    metric: str = METRIC
    # The trained classifier (encoder + head), for the noise protocol or inspection; never serialised.
    model: Classifier | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"}
        out["test_ci"] = _ci_or_none(self.test_ci)
        return _clean(out)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n")
        return path


@dataclass
class CurvePoint:
    x: int | float | str | list[float]  # training folds, training fraction, noise level (name or maxima)
    val_auc: float
    test_auc: float
    test_ci: tuple[float, float]
    n_train: int
    selected_epoch: int | None = None  # None where the point involved no training (noise levels)
    per_class: dict[str, float] = field(default_factory=dict)


@dataclass
class CurveResult:
    protocol: str  # label-efficiency | noise
    label_set: str
    n_classes: int
    x_name: str  # train_folds | train_fraction | noise_level
    points: list[CurvePoint]
    settings: dict[str, Any]
    n_val: int
    n_test: int
    metric: str = METRIC
    model: Classifier | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("model", "points")
        }
        out["points"] = [{**dataclasses.asdict(p), "test_ci": _ci_or_none(p.test_ci)} for p in self.points]
        return _clean(out)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n")
        return path


def _ci(ci: tuple[float, float]) -> str:
    low, high = ci
    if not (math.isfinite(low) and math.isfinite(high)):
        return "-"
    return f"[{low:.3f}, {high:.3f}]"


def format_result(result: ProtocolResult | CurveResult) -> str:
    """A small plain-text table for the terminal."""
    if isinstance(result, ProtocolResult):
        rows = [
            ("protocol", result.protocol),
            ("label set", f"{result.label_set} ({result.n_classes} classes)"),
            ("records train/val/test", f"{result.n_train}/{result.n_val}/{result.n_test}"),
            ("selected epoch", str(result.selected_epoch)),
            ("val macro AUC (fold 9)", f"{result.val_auc:.4f}"),
            ("test macro AUC (fold 10)", f"{result.test_auc:.4f}"),
            ("test 95% CI", _ci(result.test_ci)),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
    header = (
        f"{result.protocol} · {result.label_set} ({result.n_classes} classes) · "
        f"val {result.n_val} / test {result.n_test} records"
    )
    table = [(result.x_name, "n_train", "val AUC", "test AUC", "test 95% CI")]
    for p in result.points:
        table.append((str(p.x), str(p.n_train), f"{p.val_auc:.4f}", f"{p.test_auc:.4f}", _ci(p.test_ci)))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    return "\n".join([header, *lines])
