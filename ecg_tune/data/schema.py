"""Schema checks of what a shard dataset claims, before anything is allocated from it.

A manifest or a shard's small columns are data from disk (or a bucket), not trusted code: a shard
whose `n_samples` says 2**31-1 used to become `MemoryError: Unable to allocate 48.0 GiB` (the sizes
were compared after allocating), a negative `fs` printed "at -100 Hz" in `inspect`, string
`n_samples` and `lead_names` were accepted, and a shard label missing from the manifest vocabulary
killed a trial with a bare `KeyError`. Every error here is a `DatasetError` naming the file and field.
"""

from __future__ import annotations

import math
import re
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ecg_tune.errors import DatasetError

MAX_FS = 100_000.0  # Hz: far above any ECG; a larger value is a corrupt field
MAX_LEADS = 64
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_manifest(data: dict[str, Any], where: str) -> None:
    """Types and bounds of every manifest field that sizes, decodes or names something."""

    def bad(field: str, problem: str) -> DatasetError:
        return DatasetError(f"{where}: {field}: {problem}")

    for field in ("source", "source_version"):
        if not isinstance(data[field], str):
            raise bad(field, f"expected a string, got {data[field]!r}"[:200])
    leads = data["lead_names"]
    if not isinstance(leads, list) or not leads or not all(isinstance(n, str) and n for n in leads):
        raise bad("lead_names", f"expected a non-empty list of lead names, got {leads!r}"[:200])
    if len(leads) > MAX_LEADS or len(set(leads)) != len(leads):
        raise bad("lead_names", f"{len(leads)} names, {len(set(leads))} distinct: expected up to {MAX_LEADS} distinct")
    fs = data["fs"]
    if not _is_number(fs) or not 0 < fs <= MAX_FS:
        raise bad("fs", f"sampling rate must be a number in (0, {MAX_FS:g}] Hz, got {fs!r}")
    for field in ("n_records", "clipped_samples", "flat_leads"):
        if field in data and not (_is_int(data[field]) and data[field] >= 0):
            raise bad(field, f"expected a non-negative integer, got {data[field]!r}")
    shards = data["shards"]
    if not isinstance(shards, list):
        raise bad("shards", "expected a list")
    for i, entry in enumerate(shards):
        if not isinstance(entry, dict) or not {"file", "rows", "sha256"} <= set(entry):
            raise bad(f"shards[{i}]", "expected {file, rows, sha256}")
        file = entry["file"]
        parts = PurePosixPath(file).parts if isinstance(file, str) else ()
        if not parts or parts[0] != "shards" or ".." in parts or "\\" in file or PurePosixPath(file).is_absolute():
            raise bad(f"shards[{i}].file", f"{file!r} is not a file in the dataset's shards/ folder")
        if not (_is_int(entry["rows"]) and entry["rows"] >= 0):
            raise bad(f"shards[{i}].rows", f"expected a non-negative integer, got {entry['rows']!r}")
        if not (isinstance(entry["sha256"], str) and _SHA256.match(entry["sha256"])):
            raise bad(f"shards[{i}].sha256", "expected 64 lowercase hex digits")
    if _is_int(data["n_records"]) and sum(e["rows"] for e in shards) != data["n_records"]:
        raise bad("n_records", f"{data['n_records']}, but the shards hold {sum(e['rows'] for e in shards)} rows")
    sets = data["label_sets"]
    if not isinstance(sets, dict):
        raise bad("label_sets", "expected a mapping of label set names")
    for name, spec in sets.items():
        vocab = spec.get("vocabulary") if isinstance(spec, dict) else None
        if not isinstance(vocab, list) or not all(isinstance(c, str) for c in vocab):
            raise bad(f"label_sets.{name}.vocabulary", "expected a list of class names")
    default = data["default_label_set"]
    if default is not None and default not in sets:
        raise bad("default_label_set", f"{default!r} is not one of the label sets ({', '.join(sorted(sets)) or 'none'})")
    norm = data["normalization"]
    for key in ("mean", "std"):
        values = norm.get(key) if isinstance(norm, dict) else None
        if not isinstance(values, list) or len(values) != len(leads) or not all(_is_number(v) for v in values):
            raise bad(f"normalization.{key}", f"expected {len(leads)} finite numbers (one per lead)")
    encoding = data.get("signal_encoding", {})
    units = encoding.get("units_per_mv", 1000.0) if isinstance(encoding, dict) else None
    if units is None or not _is_number(units) or units <= 0:
        raise bad("signal_encoding.units_per_mv", f"must be a positive number, got {units!r}")
    for field in ("quarantine", "notes"):
        if field in data and not isinstance(data[field], list):
            raise bad(field, "expected a list")


_TYPES = {"record_id": pa.types.is_string, "n_samples": pa.types.is_integer, "fs": pa.types.is_floating,
          "fold": pa.types.is_integer}


def check_shard_meta(table: pa.Table, manifest: Any, where: str, signal_bytes: int) -> None:
    """A shard's small columns against its schema and the manifest, before its signals are allocated.

    `signal_bytes`: the uncompressed size of its signal column (Parquet metadata), the most that
    `n_samples` x leads x 2 bytes may claim.
    """

    def bad(field: str, problem: str) -> DatasetError:
        return DatasetError(f"{where}: {field}: {problem}")

    names = set(table.column_names)
    for column, is_type in _TYPES.items():
        if column not in names:
            raise bad(column, "column missing")
        if not is_type(table.schema.field(column).type):
            raise bad(column, f"has type {table.schema.field(column).type}, expected {is_type.__name__[3:]}")
        if table.column(column).null_count:
            raise bad(column, "has null values")
    n_leads = len(manifest.lead_names)
    lengths = np.asarray(table.column("n_samples"), dtype=np.int64)
    if len(lengths) and (lengths.min() < 1 or int(lengths.max()) * n_leads * 2 >= 2**31):
        raise bad("n_samples", f"values from {lengths.min()} to {lengths.max()}: must be 1 to {(2**31 - 1) // (n_leads * 2)}")
    claimed = int(lengths.sum()) * n_leads * 2
    if claimed > signal_bytes:
        raise bad("n_samples", f"claims {claimed} bytes of signal for {n_leads} leads, the signal column holds "
                               f"{signal_bytes}: corrupt shard")
    if len(lengths):
        fs = np.unique(np.asarray(table.column("fs"), dtype=np.float64))
        if len(fs) != 1 or not math.isclose(float(fs[0]), float(manifest.fs), rel_tol=1e-6):
            raise bad("fs", f"{fs.tolist()[:5]} Hz, the manifest says {manifest.fs:g} Hz")
        folds = np.asarray(table.column("fold"), dtype=np.int64)
        if folds.min() < 1 or folds.max() > 10:
            raise bad("fold", f"values from {folds.min()} to {folds.max()}: folds are 1 to 10")
        if pc.count_distinct(table.column("record_id")).as_py() != table.num_rows:
            raise bad("record_id", "repeated record ids")
    from ecg_tune.data.shards import LABEL_PREFIX

    columns = {c[len(LABEL_PREFIX):]: c for c in table.column_names if c.startswith(LABEL_PREFIX)}
    if set(columns) != set(manifest.label_sets):
        raise bad("label columns", f"label sets {sorted(columns)}, the manifest lists {sorted(manifest.label_sets)}")
    for name, column in columns.items():
        vocabulary = set(manifest.label_sets[name]["vocabulary"])
        field = table.schema.field(column).type
        if not (pa.types.is_list(field) and pa.types.is_string(field.value_type)):
            raise bad(column, f"has type {field}, expected list<string>")
        codes = set(pc.unique(pc.list_flatten(table.column(column))).to_pylist())
        unknown = sorted(str(c) for c in codes - vocabulary)
        if unknown:
            raise bad(column, f"label(s) {', '.join(unknown[:5])} are not in the manifest's {name!r} vocabulary")


def signal_column_bytes(metadata: Any) -> int:
    """Uncompressed bytes of the `signal` column over all row groups of a Parquet file's metadata."""
    total = 0
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        for c in range(group.num_columns):
            column = group.column(c)
            if column.path_in_schema == "signal":
                total += column.total_uncompressed_size
    return total
