"""One source record → a shard row and its int16 samples: leads checked and ordered, resampled to the
target rate, quantised (`prepare`, run by `ingest` on its workers)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecg_tune.data.record import RawRecord
from ecg_tune.data.resample import resample
from ecg_tune.data.sources.base import normalise_leads
from ecg_tune.errors import RecordError

UNITS_PER_MV = 1000.0  # 1 µV per int16 step: ±32.767 mV range
_LABEL_SET = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass(frozen=True)
class Target:
    lead_names: tuple[str, ...]
    fs: float
    units_per_mv: float = UNITS_PER_MV


def prepare(record: RawRecord, target: Target, origin_id: str) -> tuple[dict[str, Any], np.ndarray]:
    """A RawRecord → (row metadata, int16 (n_samples, leads) in target lead order). RecordError if unusable."""
    path = record.path or record.record_id
    names, signs = normalise_leads(list(record.lead_names), path)
    signal = np.asarray(record.signal)
    if signal.ndim != 2 or signal.shape[0] != len(names):
        raise RecordError(path, f"signal of shape {signal.shape} does not match {len(names)} lead names")
    if not np.issubdtype(signal.dtype, np.number):
        raise RecordError(path, f"signal is not numeric ({signal.dtype})")
    fs = float(record.fs)
    if not np.isfinite(fs) or fs <= 0:
        raise RecordError(path, f"sampling frequency must be positive, got {record.fs!r}")
    missing = [lead for lead in target.lead_names if lead not in names]
    if missing:
        raise RecordError(path, f"missing lead(s) {', '.join(missing)} (has {', '.join(names)})")
    if signal.shape[1] == 0:
        raise RecordError(path, "record has no samples")
    if record.fold is not None and not (isinstance(record.fold, int | np.integer) and 1 <= record.fold <= 10):
        raise RecordError(path, f"fold {record.fold!r} is not 1-10")
    rows = [names.index(lead) for lead in target.lead_names]
    flip = signs[rows] < 0
    if fs == target.fs:
        q, lo, hi = _quantise_same_rate(signal, rows, flip, target.units_per_mv, path, target.lead_names)
    else:
        x = np.asarray(signal[rows], dtype=np.float64)
        if flip.any():
            x *= signs[rows, None]
        _check_finite(x, path, target.lead_names)
        x = resample(x, fs, target.fs)
        if x.shape[1] == 0:
            raise RecordError(path, f"record of {signal.shape[1]} samples at {fs:g} Hz is too short for {target.fs:g} Hz")
        q = np.rint(x * target.units_per_mv)
        lo, hi = q.min(axis=1), q.max(axis=1)
    clipped = 0
    if lo.min() < -32768 or hi.max() > 32767:
        clipped = int(np.count_nonzero((q < -32768) | (q > 32767)))
        np.clip(q, -32768, 32767, out=q)
        lo, hi = np.clip(lo, -32768, 32767), np.clip(hi, -32768, 32767)
    # Statistics on the lead-major float copy (contiguous rows are fast); the sums are integers, exact
    # in float64 up to 2**53, i.e. for records below ~8 million samples per lead.
    if q.shape[1] * 32768.0**2 < 2.0**53:
        sums, squares = q.sum(axis=1), np.einsum("ij,ij->i", q, q)
    else:
        wide = q.astype(np.int64)
        sums, squares = wide.sum(axis=1), (wide * wide).sum(axis=1)
    flat_rows = np.nonzero(hi == lo)[0]
    if len(flat_rows) == len(target.lead_names):
        raise RecordError(path, f"every lead is flat (constant over all {q.shape[1]} samples): no signal")
    flat = len(flat_rows)
    notes = []  # kept, but worth a look: named in the manifest's `notes`
    if flat:
        notes.append(f"flat (constant) lead(s) {', '.join(target.lead_names[i] for i in flat_rows)}")
    if clipped:
        notes.append(f"{clipped} sample(s) beyond ±{32767 / target.units_per_mv:g} mV clipped")
    data = np.ascontiguousarray(q.T, dtype="<i2")  # time-major (n_samples, leads), C order; one pass
    row = {
        "record_id": str(record.record_id),
        "source": str(record.source),
        "origin_id": origin_id,
        "patient_id": None if record.patient_id in (None, "") else str(record.patient_id),
        "fs": float(target.fs),
        "source_fs": fs,  # journal only (not a shard column): `ingest_report` warns about upsampling
        "n_samples": int(data.shape[0]),
        "signal_hash": hashlib.sha256(data.data).hexdigest(),  # C-contiguous: hashed without a copy
        "fold": None if record.fold is None else int(record.fold),
        "age": None if record.age is None or not np.isfinite(record.age) else float(record.age),
        "sex": record.sex if record.sex in ("M", "F") else None,
        "labels": _labels(record.labels, path),
        "clipped": clipped,
        "flat": flat,
        "notes": [{"record": str(record.record_id), "path": str(path), "note": n} for n in notes],
        "sum": [int(v) for v in sums],
        "sumsq": [int(v) for v in squares],
    }
    return row, data


def _check_finite(x: np.ndarray, path: str, lead_names: Sequence[str]) -> None:
    if not np.isfinite(x).all():
        leads = [lead_names[int(i)] for i in np.nonzero(~np.isfinite(x).all(axis=1))[0]]
        raise RecordError(path, f"NaN or infinite samples in lead(s) {', '.join(leads)}")


def _quantise_same_rate(
    signal: np.ndarray, rows: list[int], flip: np.ndarray, units_per_mv: float, path: str, lead_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """rint(signal[rows] * signs * units_per_mv) as float64 (leads, time), with per-lead min and max.

    The common case (no resampling) in few passes over the data: one multiply into a new array, one
    rint in place, one min and one max per lead, which also reveal NaN and infinities (they propagate
    into the extremes), so no separate isfinite pass is needed on finite input.
    """
    src = signal if rows == list(range(signal.shape[0])) else signal[rows]
    q = np.multiply(src, units_per_mv, dtype=np.float64, order="C")  # lead-major rows: fast reductions
    if flip.any():
        q[flip] *= -1.0
    np.rint(q, out=q)
    lo, hi = q.min(axis=1), q.max(axis=1)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        # NaN/inf in the input, or finite values so large that they overflowed when scaled (those are
        # clipped like any other out-of-range value, as on the resampling path).
        _check_finite(np.asarray(src, dtype=np.float64), path, lead_names)
    return q, lo, hi


def _labels(labels: Mapping[str, Sequence[str]], path: str) -> dict[str, list[str]]:
    out = {}
    for name, codes in (labels or {}).items():
        if not _LABEL_SET.match(name):
            raise RecordError(path, f"label set name {name!r} must be letters, digits and _")
        out[name] = sorted({str(c) for c in codes})
    return out
