"""`open_dataset`: a shard dataset (manifest + Parquet shards) as one in-memory `ECGDataset`.

Every shard's sha256 is checked against the manifest while it is read. The signals go into one
`SignalStore` (a contiguous int16 array + offsets); the rest becomes the `.records` DataFrame, whose
row i is store record i. Remote datasets (s3://, gs://, ... anything `pyarrow.fs.FileSystem.from_uri`
knows) are copied once into a local cache folder keyed by the manifest's hash: `$ECG_TUNE_CACHE` or
`~/.cache/ecg-tune`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ecg_tune.data.manifest import MANIFEST, Manifest
from ecg_tune.data.schema import check_shard_meta, signal_column_bytes
from ecg_tune.data.shards import LABEL_PREFIX
from ecg_tune.data.store import SignalStore
from ecg_tune.errors import DatasetError


class ECGDataset:
    def __init__(self, path: Path, manifest: Manifest, records: pd.DataFrame, store: SignalStore):
        self.path = path
        self.manifest = manifest
        self.records = records
        self.store = store
        self._row_of: dict[str, int] | None = None
        self._label_index: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"ECGDataset({str(self.path)!r}, {len(self)} records, {self.fs:g} Hz, {len(self.lead_names)} leads)"

    @property
    def lead_names(self) -> tuple[str, ...]:
        return self.store.lead_names

    @property
    def fs(self) -> float:
        return self.store.fs

    @property
    def label_sets(self) -> list[str]:
        return sorted(self.manifest.label_sets)

    @property
    def normalization(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-lead (mean, std) in mV over the training folds (see `manifest.normalization["folds"]`)."""
        norm = self.manifest.normalization
        return np.asarray(norm["mean"], dtype=np.float32), np.asarray(norm["std"], dtype=np.float32)

    def row(self, record_id: str) -> int:
        if self._row_of is None:
            self._row_of = {rid: i for i, rid in enumerate(self.records["record_id"])}
        try:
            return self._row_of[record_id]
        except KeyError:
            raise KeyError(f"record {record_id!r} is not in {self.path}") from None

    def signal(self, record_id: str) -> np.ndarray:
        """float32 (leads, time) in mV."""
        return self.store.signal(self.row(record_id))

    def label_set_name(self, label_set: str | None) -> str:
        """`label_set`, or the dataset's default when None; a DatasetError naming the known ones if absent."""
        name = label_set or self.manifest.default_label_set
        if name not in self.manifest.label_sets:
            known = ", ".join(self.label_sets) or "(none)"
            raise DatasetError(f"{self.path}: no label set {name!r}; it has {known}")
        return name

    def label_vocabulary(self, label_set: str | None = None) -> list[str]:
        """The sorted class names of a label set (the column order of `targets`)."""
        return list(self.manifest.label_sets[self.label_set_name(label_set)]["vocabulary"])

    def targets(self, label_set: str | None = None, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """float32 multi-hot (n, classes) for `indices` (default: all rows), classes in vocabulary order."""
        name = self.label_set_name(label_set)
        vocabulary = self.label_vocabulary(name)
        if name not in self._label_index:
            index = {code: j for j, code in enumerate(vocabulary)}
            record_rows: list[int] = []
            class_cols: list[int] = []
            for i, codes in enumerate(self.records[f"labels_{name}"]):
                for code in codes:
                    record_rows.append(i)
                    class_cols.append(index[code])
            self._label_index[name] = (np.array(record_rows, dtype=np.int64), np.array(class_cols, dtype=np.int64))
        rows, cols = self._label_index[name]
        full = np.zeros((len(self), len(vocabulary)), dtype=np.float32)
        full[rows, cols] = 1.0
        return full if indices is None else full[np.asarray(indices, dtype=np.int64)]

    def indices(self, folds: Iterable[int]) -> np.ndarray:
        """int64 row indices of the records in `folds`."""
        return np.flatnonzero(np.isin(self.records["fold"].to_numpy(), list(folds))).astype(np.int64)

    def summary(self) -> dict[str, Any]:
        return _summary(self.path, self.manifest, self.records, self.store.lengths, self.store.nbytes)


def _summary(path: Path, m: Manifest, records: pd.DataFrame, lengths: np.ndarray, store_bytes: int) -> dict[str, Any]:
    seconds = lengths / m.fs if len(records) else np.zeros(1)
    folds = Counter(int(f) for f in records["fold"])
    label_sets = {}
    for name in sorted(m.label_sets):
        column = records[f"labels_{name}"]
        counts = Counter(code for codes in column for code in codes)
        label_sets[name] = {
            "classes": len(m.label_sets[name]["vocabulary"]),
            "labelled_records": int(sum(1 for codes in column if len(codes))),
            "most_common": [[code, n] for code, n in counts.most_common(5)],
        }
    # Group reasons by their wording, without the quoted names and numbers that vary per record.
    reasons = Counter(re.sub(r"'[^']*'|\d+", "_", q["reason"]).split(":")[0] for q in m.quarantine)
    return {
        "path": str(path),
        "source": m.source,
        "source_version": m.source_version,
        "records": len(records),
        "fs": float(m.fs),
        "lead_names": list(m.lead_names),
        "duration_s": {"min": float(seconds.min()), "median": float(np.median(seconds)), "max": float(seconds.max())},
        "folds": {str(f): folds[f] for f in sorted(folds)},
        "default_label_set": m.default_label_set,
        "label_sets": label_sets,
        "quarantine": {"count": len(m.quarantine), "reasons": dict(reasons.most_common()), "examples": m.quarantine[:5]},
        "clipped_samples": m.clipped_samples,
        "flat_leads": m.flat_leads,
        "notes": {"count": len(m.notes), "examples": m.notes[:5]},
        "shards": len(m.shards),
        "store_bytes": int(store_bytes),
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as aligned text lines (what `ecg-tune inspect` prints)."""
    d = summary["duration_s"]
    lines = [
        f"dataset   {summary['path']}",
        f"source    {summary['source']} ({summary['source_version']})",
        f"records   {summary['records']} in {summary['shards']} shard(s), {summary['store_bytes'] / 2**20:.1f} MiB in memory",
        f"signal    {len(summary['lead_names'])} leads ({', '.join(summary['lead_names'])}) at {summary['fs']:g} Hz, "
        f"{d['min']:g}-{d['max']:g} s (median {d['median']:g} s)",
        "folds     " + "  ".join(f"{f}:{n}" for f, n in summary["folds"].items()),
    ]
    for name, s in summary["label_sets"].items():
        mark = " (default)" if name == summary["default_label_set"] else ""
        common = ", ".join(f"{c} {n}" for c, n in s["most_common"])
        lines.append(f"labels    {name}{mark}: {s['classes']} classes, {s['labelled_records']} labelled records; {common}")
    q = summary["quarantine"]
    lines.append(f"quarantine {q['count']} record(s)" + (": " + ", ".join(f"{r} ({n})" for r, n in q["reasons"].items()) if q["count"] else ""))
    notes = summary.get("notes", {}).get("count", 0)
    lines.append(f"clipped   {summary['clipped_samples']} sample(s); flat leads {summary['flat_leads']}"
                 + (f" ({notes} record(s) named in manifest.json notes)" if notes else ""))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Opening


def open_dataset(path_or_uri: str | os.PathLike[str], *, filesystem: pafs.FileSystem | None = None) -> ECGDataset:
    """Open a shard dataset from a folder, a file:// URI, or a remote URI (copied to the local cache).

    `filesystem`: read `path_or_uri` as a path inside this pyarrow filesystem instead.
    """
    filesystem, target = _resolve(path_or_uri, filesystem)
    if filesystem is not None:
        return _open_local(_fetch(filesystem, target.rstrip("/"), cache_dir()))
    return _open_local(Path(target))


def _resolve(path_or_uri: str | os.PathLike[str], filesystem: pafs.FileSystem | None) -> tuple[Any, str]:
    """(remote filesystem or None for a local one, path in it)."""
    target = str(path_or_uri)
    if filesystem is None and "://" in target:
        try:
            filesystem, target = pafs.FileSystem.from_uri(target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as e:
            raise DatasetError(f"{path_or_uri}: cannot open this URI ({e})") from None
    return (None if isinstance(filesystem, pafs.LocalFileSystem) else filesystem), target


def cache_dir() -> Path:
    return Path(os.environ.get("ECG_TUNE_CACHE") or Path.home() / ".cache" / "ecg-tune")


def _fetch(filesystem: pafs.FileSystem, base: str, cache: Path) -> Path:
    """Copy a remote dataset into `cache/<manifest sha256>`, once; returns the local folder."""
    try:
        with filesystem.open_input_stream(f"{base}/{MANIFEST}") as f:
            manifest_bytes = f.read()
    except (FileNotFoundError, OSError) as e:
        raise DatasetError(f"{base}/{MANIFEST}: cannot read the manifest ({e})") from None
    local = cache / hashlib.sha256(manifest_bytes).hexdigest()[:24]
    if (local / MANIFEST).is_file():
        return local
    manifest = Manifest.loads(manifest_bytes.decode(), f"{base}/{MANIFEST}")
    tmp = local.with_name(f".{local.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for entry in manifest.shards:
            dest = tmp / entry["file"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            h = hashlib.sha256()
            try:
                with filesystem.open_input_stream(f"{base}/{entry['file']}") as src, open(dest, "wb") as out:
                    while block := src.read(2**22):
                        h.update(block)
                        out.write(block)
            except (FileNotFoundError, OSError) as e:
                raise DatasetError(f"{base}/{entry['file']}: cannot copy shard ({e})") from None
            if h.hexdigest() != entry["sha256"]:
                raise DatasetError(f"{base}/{entry['file']}: sha256 does not match the manifest (corrupt shard)")
        (tmp / MANIFEST).write_bytes(manifest_bytes)  # last: a cache folder with a manifest is complete
        try:
            os.replace(tmp, local)
        except OSError:  # another process finished the same copy first
            if not (local / MANIFEST).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return local


def _read_shard(
    path: Path, entry: dict[str, Any], columns: list[str] | None, verify: bool, exclude: tuple[str, ...] = ()
) -> pa.Table:
    """The shard's `columns` (default: all but `exclude`), after checking its sha256 if `verify`."""
    try:
        payload = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: shard listed in the manifest is missing") from None
    if verify and hashlib.sha256(payload).hexdigest() != entry["sha256"]:
        raise DatasetError(f"{path}: sha256 does not match the manifest (corrupt or modified shard)")
    try:
        source = pa.BufferReader(payload)
        if columns is None and exclude:
            # Only the columns needed: decompressing the signal column here and dropping it would
            # double the work of opening a dataset (the signals are read once, in pass 2).
            columns = [n for n in pq.read_schema(source).names if n not in exclude]
            source = pa.BufferReader(payload)
        return pq.read_table(source, columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise DatasetError(f"{path}: not a readable Parquet shard ({e})") from None


def summarize(path_or_uri: str | os.PathLike[str], *, filesystem: pafs.FileSystem | None = None) -> dict[str, Any]:
    """`open_dataset(path_or_uri).summary()` without loading the signals of a local dataset (its shards
    are still checked against the manifest): what `ecg-tune prepare` and `inspect` print."""
    remote, target = _resolve(path_or_uri, filesystem)
    if remote is not None:
        return open_dataset(target, filesystem=remote).summary()
    path = Path(target)
    manifest, meta, lengths = _read_meta(path)
    store_bytes = SignalStore.nbytes_for(lengths, len(manifest.lead_names))
    return _summary(path, manifest, _records_frame(meta, manifest), lengths, store_bytes)


def _read_meta(path: Path) -> tuple[Manifest, pa.Table | None, np.ndarray]:
    """Pass 1 of opening: the manifest, every shard verified and its small columns, the record lengths."""
    if not path.is_dir():
        raise DatasetError(f"{path}: dataset folder does not exist")
    manifest = Manifest.load(path / MANIFEST)
    tables = []
    for entry in manifest.shards:
        table = _read_shard(path / entry["file"], entry, None, verify=True, exclude=("signal",))
        if table.num_rows != entry["rows"]:
            raise DatasetError(f"{path / entry['file']}: {table.num_rows} rows, the manifest says {entry['rows']}")
        where = path / entry["file"]
        check_shard_meta(table, manifest, str(where), signal_column_bytes(pq.read_metadata(where)))
        tables.append(table)
    meta = pa.concat_tables(tables) if tables else None
    lengths = np.asarray(meta.column("n_samples"), dtype=np.int64) if meta is not None else np.zeros(0, np.int64)
    return manifest, meta, lengths


def _open_local(path: Path) -> ECGDataset:
    # Pass 1: verify every shard and read its small columns; pass 2 copies signals into one array.
    manifest, meta, lengths = _read_meta(path)
    n_leads = len(manifest.lead_names)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(lengths) else lengths
    data = np.empty((int(lengths.sum()), n_leads), dtype=np.int16)
    row = 0
    for entry in manifest.shards:
        column = _read_shard(path / entry["file"], entry, ["signal"], verify=False).column("signal")
        for chunk in column.chunks:
            row = _copy_signals(chunk, data, offsets, lengths, row, n_leads, path / entry["file"])
    store = SignalStore(data, offsets, lengths, manifest.units_per_mv, tuple(manifest.lead_names), float(manifest.fs))
    return ECGDataset(path, manifest, _records_frame(meta, manifest), store)


def _copy_signals(
    chunk: pa.Array, data: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, row: int, n_leads: int, where: Path
) -> int:
    """Copy one binary chunk's rows into `data` (its values buffer is already the rows back to back)."""
    n = len(chunk)
    if n == 0:
        return row
    if chunk.null_count:
        raise DatasetError(f"{where}: null signal")
    byte_offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32)[chunk.offset : chunk.offset + n + 1]
    expected = lengths[row : row + n] * n_leads * 2
    if not np.array_equal(np.diff(byte_offsets), expected):
        raise DatasetError(f"{where}: signal sizes do not match n_samples x {n_leads} leads")
    start, end = int(byte_offsets[0]), int(byte_offsets[-1])
    values = np.frombuffer(chunk.buffers()[2], dtype="<i2", count=(end - start) // 2, offset=start)
    first = int(offsets[row])
    data[first : first + values.size // n_leads] = values.reshape(-1, n_leads)
    return row + n


def _records_frame(meta: pa.Table | None, manifest: Manifest) -> pd.DataFrame:
    if meta is None:
        return pd.DataFrame(columns=["record_id", "fold", "labels"])
    label_columns = [c for c in meta.column_names if c.startswith(LABEL_PREFIX)]
    frame = meta.drop_columns(label_columns).to_pandas()
    for column in label_columns:
        values = meta.column(column).to_pylist()
        name = column[len(LABEL_PREFIX) :]
        frame[column] = values
        frame[f"labels_{name}"] = values
    default = manifest.default_label_set
    frame["labels"] = frame[f"labels_{default}"] if default else [[] for _ in range(len(frame))]
    return frame
