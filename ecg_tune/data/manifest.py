"""`manifest.json`: what a shard dataset holds and how to decode it (docs/architecture.md).

Written last and atomically by ingest, so its presence means the dataset is complete. JSON object keys
are strings, so fold numbers appear as "1".."10" in `counts_per_fold`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ecg_tune.data.schema import check_manifest
from ecg_tune.data.shards import atomic_write
from ecg_tune.errors import DatasetError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TRAIN_FOLDS = tuple(range(1, 9))  # PTB-XL protocol: 1-8 train, 9 validation, 10 test


@dataclass
class Manifest:
    source: str
    source_version: str
    lead_names: list[str]
    fs: float
    normalization: dict[str, Any]  # {"mean": [mV per lead], "std": [...], "folds": [1..8]}
    label_sets: dict[str, dict[str, Any]]  # {name: {"vocabulary": [...], "counts_per_fold": {code: {fold: n}}}}
    default_label_set: str | None
    shards: list[dict[str, Any]]  # [{"file", "rows", "sha256"}]
    quarantine: list[dict[str, str]]  # [{"record", "path", "reason"}]
    n_records: int
    clipped_samples: int = 0
    flat_leads: int = 0  # leads that are constant over a whole record (allowed, but worth knowing)
    notes: list[dict[str, str]] = field(default_factory=list)  # [{"record", "path", "note"}]: flat leads, clipping
    signal_encoding: dict[str, Any] = field(
        default_factory=lambda: {"dtype": "int16", "units_per_mv": 1000.0, "layout": "time-major"}
    )
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    format_version: int = FORMAT_VERSION

    @property
    def units_per_mv(self) -> float:
        return float(self.signal_encoding["units_per_mv"])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=False) + "\n"

    def save(self, path: Path) -> None:
        atomic_write(Path(path), self.to_json().encode())

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = MANIFEST) -> Manifest:
        if not isinstance(data, dict):
            raise DatasetError(f"{where}: not a manifest (expected a JSON object)")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise DatasetError(f"{where}: format_version {version!r} is not supported (this code reads {FORMAT_VERSION})")
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        missing = sorted(required - set(data))
        if missing:
            raise DatasetError(f"{where}: missing key(s) {', '.join(missing)}")
        check_manifest(data, where)  # types and bounds, before anything is sized from them
        encoding = data.get("signal_encoding", {})
        if encoding.get("dtype", "int16") != "int16" or encoding.get("layout", "time-major") != "time-major":
            raise DatasetError(f"{where}: unsupported signal encoding {encoding}")
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def load(cls, path: Path | str) -> Manifest:
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise DatasetError(f"{path}: no manifest (not a shard dataset, or its ingest did not finish)") from None
        return cls.loads(text, str(path))

    @classmethod
    def loads(cls, text: str, where: str = MANIFEST) -> Manifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{where}: not valid JSON ({e})") from None
        return cls.from_dict(data, where)


def label_set_summary(
    labels: Sequence[dict[str, list[str]]], folds: Sequence[int], names: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """Sorted vocabulary and per-fold record counts of every label set (all folds present listed)."""
    all_folds = sorted(set(int(f) for f in folds))
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(names):
        counts: dict[str, dict[str, int]] = {}
        for record_labels, fold in zip(labels, folds):
            for code in set(record_labels.get(name, [])):
                per_fold = counts.setdefault(code, {str(f): 0 for f in all_folds})
                per_fold[str(int(fold))] += 1
        vocabulary = sorted(counts)
        out[name] = {"vocabulary": vocabulary, "counts_per_fold": {c: counts[c] for c in vocabulary}}
    return out


def normalization(
    sums: Sequence[Sequence[int]], squares: Sequence[Sequence[int]], lengths: Sequence[int],
    folds: Sequence[int], n_leads: int, units_per_mv: float, train_folds: Sequence[int] = TRAIN_FOLDS,
) -> dict[str, Any]:
    """Per-lead mean and std in mV over the training folds, from exact integer sums of the int16 data.

    Falls back to all records when none is in a training fold (tiny or test-only datasets). The std is
    floored at one quantisation step so that a flat lead never divides by zero.
    """
    chosen = [i for i, f in enumerate(folds) if f in train_folds]
    used_folds = list(train_folds)
    if not chosen:
        chosen, used_folds = list(range(len(folds))), sorted(set(int(f) for f in folds))
    n = sum(int(lengths[i]) for i in chosen)
    mean, std = [0.0] * n_leads, [1.0] * n_leads
    if n:
        for lead in range(n_leads):
            s = sum(int(sums[i][lead]) for i in chosen)
            ss = sum(int(squares[i][lead]) for i in chosen)
            mean[lead] = s / n / units_per_mv
            # Exact integer variance numerator: no cancellation error however long the sums get.
            var = (n * ss - s * s) / (n * n) / units_per_mv**2
            std[lead] = max(math.sqrt(max(var, 0.0)), 1.0 / units_per_mv)
    return {"mean": mean, "std": std, "folds": used_folds}
