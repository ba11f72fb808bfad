"""Result records of the evaluation protocols: JSON-serialisable, with a small terminal table."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

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
    test_auc_present: float = float("nan")  # macro AUROC over the classes present in the test fold
    test_auprc: float = float("nan")  # macro average precision over classes with a test positive
    absent_classes: list[str] = field(default_factory=list)  # lack a positive or a negative in fold 10
    per_class_auprc: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # below chance, degenerate head, collapsed features
    # Per-record test probabilities for paired comparisons (saved as `<name>.scores.npz`, not in JSON).
    test_scores: np.ndarray | None = field(default=None, repr=False, compare=False)
    test_targets: np.ndarray | None = field(default=None, repr=False, compare=False)
    record_ids: list[str] | None = field(default=None, repr=False, compare=False)
    # The trained classifier (encoder + head), for the noise protocol or inspection; never serialised.
    model: Classifier | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in _UNSAVED}
        out["test_ci"] = _ci_or_none(self.test_ci)
        return _clean(out)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: str | Path) -> Path:
        """Write the JSON atomically and, when the result holds test scores, `<stem>.scores.npz` beside it
        (record_ids, scores float32, targets uint8, codes)."""
        path = Path(path)
        _atomic_write(path, (self.to_json() + "\n").encode())
        if self.test_scores is not None and self.test_targets is not None and self.record_ids is not None:
            buf = io.BytesIO()
            np.savez_compressed(
                buf,
                record_ids=np.asarray(self.record_ids, dtype=str),
                scores=np.asarray(self.test_scores, dtype=np.float32),
                targets=np.asarray(self.test_targets, dtype=np.uint8),
                codes=np.asarray(list(self.per_class), dtype=str),
            )
            _atomic_write(scores_path(path), buf.getvalue())
        return path


_UNSAVED = ("model", "test_scores", "test_targets", "record_ids")


def scores_path(json_path: str | Path) -> Path:
    path = Path(json_path)
    return path.with_name(path.stem + ".scores.npz")


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


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
    warnings: list[str] = field(default_factory=list)
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
        _atomic_write(path, (self.to_json() + "\n").encode())
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
            ("test macro AUC (fold 10)", f"{result.test_auc:.4f}  (absent classes count 0.5, as the paper)"),
            ("test 95% CI", _ci(result.test_ci)),
            ("test AUC, present classes", f"{result.test_auc_present:.4f}  ({result.n_classes - len(result.absent_classes)} of {result.n_classes} classes)"),
            ("test macro AUPRC", f"{result.test_auprc:.4f}"),
        ]
        if result.absent_classes:
            rows.append(("absent from fold 10", ", ".join(result.absent_classes)))
        rows.append(("rests on", rests_on(result.settings, result.n_train)))
        width = max(len(k) for k, _ in rows)
        lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
        return "\n".join(lines + [f"WARNING: {w}" for w in result.warnings])
    header = (
        f"{result.protocol} · {result.label_set} ({result.n_classes} classes) · "
        f"val {result.n_val} / test {result.n_test} records"
    )
    table = [(result.x_name, "n_train", "val AUC", "test AUC", "test 95% CI")]
    for p in result.points:
        table.append((str(p.x), str(p.n_train), f"{p.val_auc:.4f}", f"{p.test_auc:.4f}", _ci(p.test_ci)))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    trained = result.settings.get("curve_protocol")
    footer = [f"trained with: {trained}"] if trained else []
    return "\n".join([header, *lines, *footer, *[f"WARNING: {w}" for w in result.warnings]])


def rests_on(settings: dict[str, Any], n_train: int) -> str:
    """One line: what a number rests on (training records, epochs, seed, encoder, recipe)."""
    parts = [f"{n_train} training records", f"seed {settings.get('seed', '?')}"]
    if "epochs" in settings:
        parts.append(f"{settings['epochs']} epochs" + (f" (+{settings['head_epochs']} head-only)" if settings.get("head_epochs") else ""))
    if "steps_per_epoch" in settings:
        parts.append(f"{settings['steps_per_epoch']} steps/epoch")
    for key in ("encoder", "recipe", "head"):
        if settings.get(key):
            parts.append(f"{key} {settings[key]}")
    return ", ".join(parts)
