"""One shard dataset opened for streaming: its manifest, row groups and record lengths, never its signals.

Opening reads the manifest and, per shard, the Parquet footer and the small `n_samples` column (plus
`origin_id`/`signal_hash` when a leakage reference is given, reduced at once to a boolean mask), so it
holds a few bytes per record. Signals are read one row group at a time (`ParquetFile.read_row_group`)
from any `pyarrow.fs` file system: a local folder, a shared file system, or `s3://` / `gs://` URIs
(credentials come from the environment as pyarrow reads them, e.g. `AWS_ACCESS_KEY_ID`; a URI that
carries a key is refused, because data paths are written into configs, checkpoints and sweep folders).
With a `ShardCache`, remote shards are copied to local disk on first use, and every shard is decoded once
into a raw int16 file there that later reads memory-map (no decompression after the first epoch).
When the cache's disk fills up, the corpus warns once and goes on reading the shards themselves: a
trial slows down instead of failing.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ecg_tune.data.manifest import MANIFEST, Manifest
from ecg_tune.data.shard_cache import CacheFull, ShardCache
from ecg_tune.errors import DatasetError

log = logging.getLogger(__name__)
_SECRET_QUERY_KEYS = ("access_key", "secret_key", "session_token")


@dataclass(frozen=True)
class RowGroup:
    """The unit of reading: row group `group` of shard `shard` (index into the manifest's shards)."""

    shard: int
    group: int
    first: int  # corpus row of the group's first record
    rows: int


class StreamCorpus:
    def __init__(
        self,
        uri: str,
        filesystem: pafs.FileSystem,
        base: str,
        manifest: Manifest,
        groups: list[RowGroup],
        lengths: np.ndarray,
        leaked: np.ndarray,
        cache: ShardCache | None = None,
    ):
        self.uri = uri
        self.filesystem = filesystem
        self.base = base
        self.manifest = manifest
        self.groups = groups
        self.lengths = lengths  # int64 (n_records,) samples per record, corpus row order
        self.leaked = leaked  # bool (n_records,): copies of held-out downstream records
        self.cache = cache
        self.remote = not isinstance(filesystem, pafs.LocalFileSystem)
        self._shard_first = np.concatenate([[0], np.cumsum([int(e["rows"]) for e in manifest.shards])]).astype(np.int64)

    def __repr__(self) -> str:
        return f"StreamCorpus({self.uri!r}, {len(self)} records, {len(self.groups)} row groups)"

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def lead_names(self) -> tuple[str, ...]:
        return tuple(self.manifest.lead_names)

    @property
    def fs(self) -> float:
        return float(self.manifest.fs)

    @property
    def units_per_mv(self) -> float:
        return self.manifest.units_per_mv

    @property
    def nbytes(self) -> int:
        """What the in-memory store of this corpus would take (int16 signals)."""
        return int(self.lengths.sum()) * len(self.lead_names) * 2

    @classmethod
    def open(
        cls,
        uri: str | os.PathLike[str],
        *,
        cache: ShardCache | None = None,
        held_out: tuple[set[str], set[str]] | None = None,
    ) -> StreamCorpus:
        """Open `uri` (folder, file:// or remote URI); `held_out` = (origin ids, signal hashes) to mask."""
        text = str(uri)
        filesystem, base = _filesystem(text)
        where = f"{text.rstrip('/')}/{MANIFEST}"
        try:
            with filesystem.open_input_stream(f"{base}/{MANIFEST}") as f:
                manifest = Manifest.loads(f.read().decode(), where)
        except (FileNotFoundError, OSError) as e:
            raise DatasetError(f"{where}: cannot read the manifest ({e})") from None
        columns = ["n_samples"] + (["origin_id", "signal_hash"] if held_out is not None else [])
        groups: list[RowGroup] = []
        lengths: list[np.ndarray] = []
        leaked: list[np.ndarray] = []
        first = 0
        for i, entry in enumerate(manifest.shards):
            shard_uri = f"{text.rstrip('/')}/{entry['file']}"
            try:
                with filesystem.open_input_file(f"{base}/{entry['file']}") as f:
                    pf = pq.ParquetFile(f)
                    table = pf.read(columns=columns)
                    sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
            except (pa.ArrowException, OSError) as e:
                raise DatasetError(f"{shard_uri}: not a readable Parquet shard ({e})") from None
            if table.num_rows != entry["rows"]:
                raise DatasetError(f"{shard_uri}: {table.num_rows} rows, the manifest says {entry['rows']}")
            for g, rows in enumerate(sizes):
                groups.append(RowGroup(i, g, first, rows))
                first += rows
            lengths.append(np.asarray(table.column("n_samples"), dtype=np.int64))
            if held_out is not None:
                by_origin = np.isin(np.asarray(table.column("origin_id").to_pylist(), dtype=object), list(held_out[0]))
                by_hash = np.isin(np.asarray(table.column("signal_hash").to_pylist(), dtype=object), list(held_out[1]))
                leaked.append(by_origin | by_hash)
        all_lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
        all_leaked = np.concatenate(leaked) if leaked else np.zeros(len(all_lengths), bool)
        return cls(text, filesystem, base, manifest, groups, all_lengths, all_leaked, cache)

    def shard_uri(self, shard: int) -> str:
        return f"{self.uri.rstrip('/')}/{self.manifest.shards[shard]['file']}"

    def read_group(self, group: RowGroup) -> tuple[np.ndarray, np.ndarray]:
        """Signals of one row group: (int16 (samples, leads) rows back to back, int64 first row of each record).

        With a cache, the rows are a read-only memory map of the shard's decoded file (decoded on first
        use); without one, the row group is read and decoded from the shard.
        """
        if self.cache is None:
            return self._read_parquet(group)
        entry, n_leads = self.manifest.shards[group.shard], len(self.lead_names)
        lo = self._shard_first[group.shard]
        shard_lengths = self.lengths[lo : lo + int(entry["rows"])]
        try:
            path = self.cache.decoded(entry["sha256"], int(shard_lengths.sum()) * n_leads * 2,
                                      lambda out: self._decode_shard(group.shard, out), self.shard_uri(group.shard))
        except CacheFull as e:
            self._without_cache(e)
            return self._read_parquet(group)
        rows = self.lengths[group.first : group.first + group.rows]
        row_start = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.int64)
        count = int(rows.sum())
        if count == 0:
            return np.zeros((0, n_leads), np.int16), row_start
        before = int(self.lengths[lo : group.first].sum())
        data = np.memmap(path, dtype="<i2", mode="r", offset=before * n_leads * 2, shape=(count, n_leads))
        return data, row_start

    def _without_cache(self, e: CacheFull) -> None:
        if self.cache is not None:
            log.warning("%s; streaming on without the cache (slower: every epoch decompresses the shards "
                        "again). Free space there or point data.stream_cache at a larger disk.", e)
        self.cache = None

    def _decode_shard(self, shard: int, out: BinaryIO) -> None:
        for group in self.groups:
            if group.shard == shard:
                data, _ = self._read_parquet(group)
                out.write(np.ascontiguousarray(data, dtype="<i2").data)

    def _read_parquet(self, group: RowGroup) -> tuple[np.ndarray, np.ndarray]:
        entry = self.manifest.shards[group.shard]
        where = self.shard_uri(group.shard)
        filesystem, path = self.filesystem, f"{self.base}/{entry['file']}"
        if self.cache is not None and self.remote:
            try:
                filesystem, path = pafs.LocalFileSystem(), str(self.cache.local(filesystem, path, entry["sha256"], where))
            except CacheFull as e:
                self._without_cache(e)
        try:
            with filesystem.open_input_file(path) as f:
                table = pq.ParquetFile(f).read_row_group(group.group, columns=["signal"], use_threads=False)
        except (pa.ArrowException, OSError) as e:
            raise DatasetError(f"{where}: cannot read row group {group.group} ({e})") from None
        column = table.column("signal")
        chunk = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        n_leads = len(self.lead_names)
        if chunk.null_count:
            raise DatasetError(f"{where}: row group {group.group} has a null signal")
        n = len(chunk)
        offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32)[chunk.offset : chunk.offset + n + 1].astype(np.int64)
        expected = self.lengths[group.first : group.first + n] * n_leads * 2
        if n != group.rows or not np.array_equal(np.diff(offsets), expected):
            raise DatasetError(f"{where}: row group {group.group}: signal sizes do not match n_samples x {n_leads} leads")
        values = chunk.buffers()[2]
        data = np.frombuffer(values, dtype="<i2", count=(int(offsets[-1]) - int(offsets[0])) // 2,
                             offset=int(offsets[0])).reshape(-1, n_leads)
        return data, (offsets[:-1] - offsets[0]) // (2 * n_leads)


def _filesystem(text: str) -> tuple[pafs.FileSystem, str]:
    if "://" not in text:
        return pafs.LocalFileSystem(), str(Path(text).resolve())
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(text).query)
    if any(k in query for k in _SECRET_QUERY_KEYS):
        raise DatasetError(
            f"{text.split('?')[0]}: the URI carries credentials, which would be written into configs and the "
            "sweep folder; give them in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...)"
        )
    try:
        filesystem, base = pafs.FileSystem.from_uri(text)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as e:
        raise DatasetError(f"{text}: cannot open this URI ({e})") from None
    return filesystem, base.rstrip("/")
