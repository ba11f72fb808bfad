"""Parquet shards: one row per record, the signal as int16 bytes, readable by plain pyarrow/pandas.

Schema (docs/architecture.md): record_id, source, origin_id, patient_id?, fs float32, n_samples int32,
signal binary (int16 little-endian, (n_samples, n_leads) C order), signal_hash (sha256 hex of those
bytes), fold int8, age float32?, sex string?, and one `label_<set>` list<string> column per label set.

Shards are zstd-compressed, split into row groups of ~16 MiB of signal (so a reader can stream them)
and written atomically: the bytes are built in memory, hashed, written to a temp file next to the
target and renamed over it, so a shard on disk is always complete and its sha256 is known.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SHARD_DIR = "shards"
ROW_GROUP_BYTES = 16 * 2**20
LABEL_PREFIX = "label_"
_SMALL_COLUMNS = ("record_id", "source", "origin_id", "patient_id", "fs", "n_samples", "fold", "age", "sex")


def shard_name(index: int) -> str:
    return f"{SHARD_DIR}/shard-{index:05d}.parquet"


def label_column(label_set: str) -> str:
    return LABEL_PREFIX + label_set


def schema(label_sets: Sequence[str], lead_names: Sequence[str] = (), units_per_mv: float = 1000.0) -> pa.Schema:
    fields = [
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("origin_id", pa.string(), nullable=False),
        pa.field("patient_id", pa.string()),
        pa.field("fs", pa.float32(), nullable=False),
        pa.field("n_samples", pa.int32(), nullable=False),
        pa.field("signal", pa.binary(), nullable=False),
        pa.field("signal_hash", pa.string(), nullable=False),
        pa.field("fold", pa.int8(), nullable=False),
        pa.field("age", pa.float32()),
        pa.field("sex", pa.string()),
    ]
    fields += [pa.field(label_column(s), pa.list_(pa.string()), nullable=False) for s in sorted(label_sets)]
    # Self-description for readers that never see the manifest.
    meta = {"ecg_tune.lead_names": json.dumps(list(lead_names)), "ecg_tune.units_per_mv": str(units_per_mv)}
    return pa.schema(fields, metadata=meta)


def signal_column(data: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """A binary array whose values are consecutive slices of `data` (int16 (total, leads)), no copies per row."""
    data = np.ascontiguousarray(data, dtype="<i2")
    row_bytes = np.asarray(lengths, dtype=np.int64) * data.shape[1] * 2
    offsets = np.concatenate([[0], np.cumsum(row_bytes)])
    if offsets[-1] != data.nbytes:
        raise ValueError(f"lengths cover {offsets[-1]} bytes but the data hold {data.nbytes}")
    if offsets[-1] >= 2**31:
        raise ValueError("a row group above 2 GiB; write it in smaller groups")
    return pa.Array.from_buffers(
        pa.binary(), len(lengths), [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)]
    )


def build_table(rows: Sequence[dict[str, Any]], data: np.ndarray, sch: pa.Schema) -> pa.Table:
    """Rows (metadata dicts with the schema's non-signal fields, `labels` {set: codes}) + their signals."""
    lengths = np.array([r["n_samples"] for r in rows], dtype=np.int64)
    arrays = []
    for f in sch:
        if f.name == "signal":
            arrays.append(signal_column(data, lengths))
        elif f.name.startswith(LABEL_PREFIX):
            label_set = f.name[len(LABEL_PREFIX) :]
            arrays.append(pa.array([list(r["labels"].get(label_set, [])) for r in rows], f.type))
        else:
            arrays.append(pa.array([r.get(f.name) for r in rows], f.type))
    return pa.Table.from_arrays(arrays, schema=sch)


def _row_groups(lengths: np.ndarray, n_leads: int) -> list[tuple[int, int]]:
    bounds, start, acc = [], 0, 0
    for i, n in enumerate(lengths):
        acc += int(n) * n_leads * 2
        if acc >= ROW_GROUP_BYTES:
            bounds.append((start, i + 1))
            start, acc = i + 1, 0
    if start < len(lengths) or not bounds:
        bounds.append((start, len(lengths)))
    return bounds


def encode_shard(rows: Sequence[dict[str, Any]], data: np.ndarray, sch: pa.Schema) -> bytes:
    """The Parquet bytes of one shard (deterministic for the same input)."""
    n_leads = data.shape[1] if data.ndim == 2 else 0
    lengths = np.array([r["n_samples"] for r in rows], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    sink = pa.BufferOutputStream()
    dictionary_columns = ["source", "sex", "fold"] + [f.name for f in sch if f.name.startswith(LABEL_PREFIX)]
    with pq.ParquetWriter(
        sink,
        sch,
        compression="zstd",
        use_dictionary=dictionary_columns,
        # Min/max statistics of 24 kB signal blobs would bloat every page header for nothing.
        write_statistics=[c for c in _SMALL_COLUMNS],
    ) as writer:
        for a, b in _row_groups(lengths, n_leads):
            part = data[offsets[a] : offsets[b]]
            writer.write_table(build_table(rows[a:b], part, sch), row_group_size=max(1, b - a))
    return sink.getvalue().to_pybytes()


def atomic_write(path: Path, payload: bytes) -> None:
    """Write `payload` to `path` via a temp file in the same folder + os.replace (no partial files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_shard(path: Path, rows: Sequence[dict[str, Any]], data: np.ndarray, sch: pa.Schema) -> str:
    """Write one shard atomically; returns its sha256."""
    payload = encode_shard(rows, data, sch)
    atomic_write(path, payload)
    return hashlib.sha256(payload).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**22), b""):
            h.update(block)
    return h.hexdigest()


def decode_signal(blob: bytes, n_leads: int) -> np.ndarray:
    """One row's `signal` bytes → int16 (n_samples, n_leads)."""
    return np.frombuffer(blob, dtype="<i2").reshape(-1, n_leads)
