"""The work units of `ingest`: reading a piece of records into the journal, writing a shard from its
pieces. Module-level functions and dataclasses, so that worker processes can run them."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecg_tune.data import shards as shard_io
from ecg_tune.data.ingest_record import Target, prepare
from ecg_tune.data.journal import Journal
from ecg_tune.data.record import RawRecord
from ecg_tune.data.sources import RecordRef, Source, build_source
from ecg_tune.errors import DatasetError, RecordError

_WORKER_SOURCES: dict[str, Source] = {}


@dataclass
class PieceTask:
    shard: int
    piece: int
    refs: list[RecordRef]
    source: str
    options: dict[str, Any]
    target: Target
    out: str


@dataclass
class ShardTask:
    shard: int
    n_pieces: int
    rows: list[dict[str, Any]]
    label_sets: list[str]
    target: Target
    out: str


def _quarantine_entry(record: str, path: str, reason: str) -> dict[str, str]:
    return {"record": record, "path": path, "reason": reason}


def process_records(
    items: Iterable[tuple[str, str, Callable[[], RawRecord]]], target: Target, origin_of: Callable[[RawRecord], str]
) -> tuple[list[dict], np.ndarray, list[dict]]:
    """(record id, path, read function) items → rows, concatenated int16 data, quarantine entries."""
    rows, arrays, quarantine = [], [], []
    for record_id, path, read in items:
        try:
            record = read()
            row, data = prepare(record, target, origin_of(record))
        except RecordError as e:
            quarantine.append(_quarantine_entry(record_id, e.path, e.reason))
        except (OSError, ValueError) as e:  # a reader bug or library failure on odd input: still one record
            quarantine.append(_quarantine_entry(record_id, path, f"{type(e).__name__}: {e}"))
        else:
            row["record_id"] = record_id
            rows.append(row)
            arrays.append(data)
    data = np.concatenate(arrays) if arrays else np.zeros((0, len(target.lead_names)), dtype="<i2")
    return rows, data, quarantine


def run_piece(task: PieceTask) -> dict[str, Any]:
    key = json.dumps([task.source, task.options], sort_keys=True, default=str)
    if key not in _WORKER_SOURCES:
        _WORKER_SOURCES[key] = build_source(task.source, task.options)
    src = _WORKER_SOURCES[key]

    def reader(ref: RecordRef) -> Callable[[], RawRecord]:
        return lambda: src.read(ref)

    items = ((ref.record_id, ref.path, reader(ref)) for ref in task.refs)
    rows, data, quarantine = process_records(items, task.target, src.origin_id)
    Journal(Path(task.out)).save_piece(task.shard, task.piece, rows, data, quarantine)
    return {"rows": rows, "quarantine": quarantine}  # what the journal holds, so that it is not read back


def run_shard(task: ShardTask) -> dict[str, Any]:
    out = Path(task.out)
    journal = Journal(out)
    n_leads = len(task.target.lead_names)
    parts = [journal.piece_data(task.shard, p, n_leads) for p in range(task.n_pieces)]
    data = np.concatenate(parts) if parts else np.zeros((0, n_leads), dtype="<i2")
    expected = sum(r["n_samples"] for r in task.rows)
    if data.shape[0] != expected:
        raise DatasetError(f"{journal.dir}: piece data of shard {task.shard} hold {data.shape[0]} samples, rows say {expected}")
    sch = shard_io.schema(task.label_sets, task.target.lead_names, task.target.units_per_mv)
    name = shard_io.shard_name(task.shard)
    sha = shard_io.write_shard(out / name, task.rows, data, sch)
    entry = {"file": name, "rows": len(task.rows), "sha256": sha}
    shard_io.atomic_write(journal.shard_json(task.shard), json.dumps(entry).encode())
    for p in range(task.n_pieces):
        journal.piece_bin(task.shard, p).unlink(missing_ok=True)
    return entry
