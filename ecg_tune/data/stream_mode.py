"""`data.mode`: in-memory store or streaming for the pretraining corpora, and the streaming source itself.

`auto` streams when the corpora's in-memory size (int16 signals, from the shards' `n_samples`, no
signal read) exceeds `data.memory_budget_gb` (0: a quarter of this node's RAM, below Ray's default
object store share of 30 %), and the decision comes with a one-line reason that the caller logs and
records. Downstream (PTB-XL-size) datasets are always opened in memory by their users.

`StreamDataset` is how a sweep driver holds a pretraining corpus of a `data.mode: stream` sweep: the
manifest and the per-record metadata (no signal column is read), enough for its checks, manifest
digests and MLflow inputs (leakage exclusions included), while its trials stream the shards.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ecg_tune.config import DataConfig
from ecg_tune.data.shard_cache import ShardCache
from ecg_tune.data.stream import Part, StreamSource
from ecg_tune.data.stream_corpus import StreamCorpus
from ecg_tune.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)
MODES = ("auto", "memory", "stream")


def memory_budget_bytes(budget_gb: float) -> int:
    if budget_gb > 0:
        return int(budget_gb * 2**30)
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 16 * 2**30
    return int(ram // 4)


def choose_mode(mode: str, budget_gb: float, corpus_bytes: int) -> tuple[str, str]:
    """(memory | stream, why) for corpora that take `corpus_bytes` in memory."""
    if mode not in MODES:
        raise ConfigError("data.mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
    size = f"{corpus_bytes / 2**30:.2f} GiB"
    if mode != "auto":
        return mode, f"data.mode={mode} (corpora {size} in memory)"
    budget = memory_budget_bytes(budget_gb)
    limit = f"{budget / 2**30:.2f} GiB" + ("" if budget_gb > 0 else " (a quarter of this node's RAM)")
    if corpus_bytes > budget:
        return "stream", f"data.mode=auto: streaming, the corpora take {size} in memory, above the budget {limit}"
    return "memory", f"data.mode=auto: in memory, the corpora take {size}, within the budget {limit}"


def open_corpora(data: DataConfig, held_out: tuple[set[str], set[str]] | None = None) -> list[StreamCorpus]:
    cache = ShardCache(data.stream_cache) if data.stream_cache else None
    return [StreamCorpus.open(uri, cache=cache, held_out=held_out) for uri in data.pretrain]


def stream_source(
    data: DataConfig, corpora: Sequence[StreamCorpus], seed: int, part: Part | None = None
) -> tuple[StreamSource, int]:
    """The streaming source of the pretraining corpora (leaking records and the cap applied) and the
    number of records dropped as copies of held-out downstream records."""
    keep = [~c.leaked for c in corpora]
    excluded = int(sum(int(c.leaked.sum()) for c in corpora))
    cap = data.max_pretrain_records
    kept = np.flatnonzero(np.concatenate(keep)) if keep else np.zeros(0, np.int64)
    if 0 < cap < len(kept):
        # The same fixed random subset as the in-memory path (ssl/pretrain.py): rng [seed, 17].
        chosen = np.sort(np.random.default_rng([seed, 17]).choice(kept, size=cap, replace=False))
        flat = np.zeros(sum(len(c) for c in corpora), dtype=bool)
        flat[chosen] = True
        bounds = np.cumsum([0] + [len(c) for c in corpora])
        keep = [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    part = part or Part(num_workers=max(1, data.stream_workers))
    source = StreamSource(corpora, keep=keep, weights=data.pretrain_weights, buffer=data.shuffle_buffer, part=part)
    return source, excluded


class StreamDataset:
    """A corpus opened for streaming as a sweep driver needs it: metadata, no signals, no store."""

    def __init__(self, corpus: StreamCorpus, records: pd.DataFrame):
        self.corpus, self.records, self.manifest = corpus, records, corpus.manifest
        # A local folder: the path whose manifest.json pins the data (resume digests); remote: the URI.
        self.path = corpus.uri if corpus.remote else Path(corpus.base)

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"StreamDataset({self.corpus.uri!r}, {len(self)} records, signals not loaded)"

    @property
    def lead_names(self) -> tuple[str, ...]:
        return self.corpus.lead_names

    @property
    def fs(self) -> float:
        return self.corpus.fs

    @property
    def store(self) -> None:
        raise DatasetError(f"{self.corpus.uri} is opened for streaming (data.mode: stream): it has no in-memory store")


def open_stream_dataset(uri: str) -> StreamDataset:
    """`uri`'s manifest and record metadata (every column but `signal`), read shard by shard."""
    from ecg_tune.data.dataset import _records_frame

    corpus = StreamCorpus.open(uri)
    tables = []
    for shard in range(len(corpus.manifest.shards)):
        entry = corpus.manifest.shards[shard]
        try:
            with corpus.filesystem.open_input_file(f"{corpus.base}/{entry['file']}") as f:
                pf = pq.ParquetFile(f)
                tables.append(pf.read(columns=[n for n in pf.schema_arrow.names if n != "signal"]))
        except (pa.ArrowException, OSError) as e:
            raise DatasetError(f"{corpus.shard_uri(shard)}: not a readable Parquet shard ({e})") from None
    return StreamDataset(corpus, _records_frame(pa.concat_tables(tables) if tables else None, corpus.manifest))
