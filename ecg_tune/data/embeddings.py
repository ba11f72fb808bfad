"""Embedding tables: one Parquet file, a row per record (`record_id`, `embedding`: fixed-size float32
list), with what produced it (encoder, checkpoint or model, fs, leads, window) in the file's metadata.
Written atomically; an existing file is never overwritten."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ecg_tune.errors import DatasetError

META_KEY = b"ecg_tune.embeddings"


def write_embeddings(path: str | Path, record_ids: list[str], embeddings: np.ndarray, meta: dict[str, Any]) -> Path:
    path = Path(path)
    if path.exists():
        raise DatasetError(f"{path}: already exists; choose another --out or remove it first")
    if embeddings.ndim != 2 or len(record_ids) != len(embeddings):
        raise ValueError(f"{len(record_ids)} record ids for embeddings of shape {embeddings.shape}")
    values = pa.array(np.ascontiguousarray(embeddings, dtype=np.float32).reshape(-1))
    table = pa.table({
        "record_id": pa.array(record_ids, pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(values, int(embeddings.shape[1])),
    })
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta, default=str).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_embeddings(path: str | Path) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    table = pq.read_table(path)
    meta = json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))
    column = table.column("embedding").combine_chunks()
    dim = column.type.list_size
    values = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
    return [str(r) for r in table.column("record_id").to_pylist()], values.astype(np.float32), meta
