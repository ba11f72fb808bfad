"""Helpers of the data tests: a small synthetic dataset, and a way to rewrite one of its shards as a
damaged (but checksum-consistent) file, as a buggy writer or a hostile copy would leave it."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ecg_tune.data.synthetic import write_synthetic

    out = tmp_path_factory.mktemp("tiny-synthetic") / "data"
    write_synthetic(out, n_records=40, seed=0)
    return out


def copy_dataset(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def rewrite_shard(dataset: Path, change: Callable[[pa.Table], pa.Table], index: int = 0) -> None:
    """Replace shard `index` by `change(table)`, with the manifest's sha256 and rows made to match."""
    manifest_path = dataset / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entry = manifest["shards"][index]
    table = change(pq.read_table(dataset / entry["file"]))
    pq.write_table(table, dataset / entry["file"])
    entry["sha256"] = hashlib.sha256((dataset / entry["file"]).read_bytes()).hexdigest()
    manifest["n_records"] += table.num_rows - entry["rows"]
    entry["rows"] = table.num_rows
    manifest_path.write_text(json.dumps(manifest))


def edit_manifest(dataset: Path, change: Callable[[dict], None]) -> None:
    path = dataset / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def set_column(table: pa.Table, name: str, values: list, type_: pa.DataType | None = None) -> pa.Table:
    i = table.schema.get_field_index(name)
    field = table.schema.field(i)
    array = pa.array(values, type_ or field.type)
    return table.set_column(i, pa.field(name, array.type, field.nullable), array)
