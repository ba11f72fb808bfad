"""Streaming training windows from shards that never sit in memory whole.

An epoch of one corpus is a virtual sequence of its usable records: the row groups in a seeded
permutation (`[seed, epoch, corpus, pass]`), each contributing its usable rows in file order (more
passes when the corpus is weighted above its size). That sequence is cut into `world_size x
num_workers` contiguous parts whose sizes differ by at most one record (`Part`): every usable record is
in exactly one part, and a part reads only the row groups that overlap it. Within a part a bounded
shuffle buffer (`shuffle_order`) decides the emission order; it is computed on positions up front,
so the order is a pure function of (seed, epoch, part) and a resumed stream needs only the number of
batches already taken. Mixed corpora are interleaved by weights: each part draws
`weight x epoch_records` samples from each corpus in a seeded interleaving.

The window of a record is cut as soon as its row group is read (start from `data.windows.random_starts`
seeded with `[seed, epoch, corpus, pass, shard, group]`, the same in every part and after a resume),
so the buffer holds int16 windows, not records: memory is (buffer + one batch + a row group or two)
windows plus the row groups being decoded (memory-mapped with the decoded cache, `ShardCache`),
whatever the corpus size. A background thread reads the next row groups while the caller consumes
batches (pyarrow releases the GIL while it decodes). Each window is one block copy out of a sliding
view of its row group, and the window pool is kept between epochs.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ecg_tune.data.stream_corpus import RowGroup, StreamCorpus
from ecg_tune.data.windows import random_starts
from ecg_tune.errors import ConfigError

_PREFETCH = 2  # row groups read ahead per corpus


@dataclass(frozen=True)
class Part:
    """Which slice of every epoch this reader serves: rank of world_size, loader worker of num_workers."""

    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 1

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ConfigError("rank", f"rank {self.rank} is not in 0..{self.world_size - 1}")
        if self.num_workers < 1 or not 0 <= self.worker < self.num_workers:
            raise ConfigError("worker", f"worker {self.worker} is not in 0..{self.num_workers - 1}")

    @property
    def index(self) -> int:
        return self.rank * self.num_workers + self.worker

    @property
    def count(self) -> int:
        return self.world_size * self.num_workers


def part_bounds(n: int, index: int, count: int) -> tuple[int, int]:
    """[lo, hi) of part `index` of `count` over n items; sizes differ by at most one."""
    return n * index // count, n * (index + 1) // count


def shuffle_order(n: int, buffer: int, rng: np.random.Generator) -> np.ndarray:
    """Emission order of positions 0..n-1 through a shuffle buffer of `buffer` slots.

    The buffer starts with the first `buffer` positions; each step emits a uniformly chosen slot and
    refills it with the next position. So position order[t] < buffer + t: a reader needs at most
    `buffer` items it has read but not yet emitted.
    """
    size = min(max(buffer, 1), n)
    slots = list(range(size))
    # The buffer holds `size` slots until the positions run out, then one fewer per step; the slot
    # drawn at step t is int(draw x occupancy), computed for all steps at once (the same doubles).
    occupancy = np.minimum(size, n - np.arange(n, dtype=np.int64)).astype(np.float64)
    picks = (rng.random(n) * occupancy).astype(np.int64).tolist()
    out: list[int] = []
    emit = out.append
    refill = n - size
    for t in range(refill):  # each emitted slot is refilled with the next position
        j = picks[t]
        emit(slots[j])
        slots[j] = size + t
    for t in range(refill, n):  # no positions left: the last slot moves into the emptied one
        j = picks[t]
        emit(slots[j])
        slots[j] = slots[-1]
        slots.pop()
    return np.asarray(out, dtype=np.int64)


@dataclass
class _Piece:
    """Rows [row_lo, row_hi) of a row group's usable rows, at part positions [pos, pos + rows)."""

    group: RowGroup
    pass_: int
    row_lo: int
    row_hi: int
    pos: int


class _CorpusReader:
    """One corpus's samples of one part and epoch, in shuffle order, from `skip` on."""

    def __init__(self, stream: PartStream, c: int, epoch: int, target: int, skip: int, take: int):
        self.stream, self.corpus, self.c, self.epoch = stream, stream.source.corpora[c], c, epoch
        pieces, n = stream.pieces(c, epoch, target)
        self.pieces = pieces
        rng = np.random.default_rng([stream.seed, epoch, c, stream.part.index, 1])
        order = shuffle_order(n, stream.source.buffer, rng)
        self.need = order[skip : skip + take]
        self.wanted = np.zeros(n, dtype=bool)
        self.wanted[self.need] = True
        self.slot_of = np.full(n, -1, dtype=np.int64)
        self.taken = 0
        first = int(self.need.min()) if len(self.need) else n
        self.next_piece = next((i for i, p in enumerate(pieces) if p.pos + p.row_hi - p.row_lo > first), len(pieces))
        self.loaded_upto = pieces[self.next_piece].pos if self.next_piece < len(pieces) else n
        w, leads = stream.window, len(self.corpus.lead_names)
        # The window pool of the previous epoch is reused (its pages are already mapped).
        self.pool = stream.pools.pop(c, np.empty((0, w, leads), dtype=np.int16))
        self.free: list[int] = list(range(len(self.pool) - 1, -1, -1))
        self.pending: list[tuple[_Piece, Future[tuple[np.ndarray, np.ndarray]]]] = []
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ecg-stream")
        self._submit()

    def close(self) -> None:
        for _, f in self.pending:
            f.cancel()
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.stream.pools[self.c] = self.pool

    def _submit(self) -> None:
        while len(self.pending) < _PREFETCH and self.next_piece < len(self.pieces):
            piece = self.pieces[self.next_piece]
            self.next_piece += 1
            self.pending.append((piece, self.executor.submit(self._read, piece)))

    def _read(self, piece: _Piece) -> tuple[np.ndarray, np.ndarray]:
        """(part positions, int16 windows (k, W, leads)) of the wanted rows of `piece`."""
        g, s = piece.group, self.stream
        usable = s.source.usable_rows(self.c, g)
        positions = piece.pos + np.arange(piece.row_hi - piece.row_lo)
        keep = self.wanted[positions]
        rows = usable[piece.row_lo : piece.row_hi][keep]
        rng = np.random.default_rng([s.seed, self.epoch, self.c, piece.pass_, g.shard, g.group])
        starts = random_starts(self.corpus.lengths[g.first + usable], s.window, rng)[piece.row_lo : piece.row_hi][keep]
        if len(rows) == 0:
            return positions[keep], np.empty((0, s.window, len(self.corpus.lead_names)), np.int16)
        data, row_start = self.corpus.read_group(g)
        # Every window is `window` consecutive rows: index a (rows - window + 1, window, leads) view of
        # them with one first row per window (a block copy per window, ~10x a per-sample gather).
        view = as_strided(data, shape=(data.shape[0] - s.window + 1, s.window, data.shape[1]),
                          strides=(data.strides[0], data.strides[0], data.strides[1]), writeable=False)
        return positions[keep], view[row_start[rows] + starts]

    def _load_next(self) -> None:
        piece, future = self.pending.pop(0)
        self._submit()
        positions, windows = future.result()
        k = len(positions)
        if k > len(self.free):  # grow the pool (bounded: see shuffle_order)
            grow = max(k - len(self.free), len(self.pool) // 2, 64)
            old = len(self.pool)
            self.pool = np.concatenate([self.pool, np.empty((grow,) + self.pool.shape[1:], np.int16)])
            self.free.extend(range(old + grow - 1, old - 1, -1))
        slots = np.asarray(self.free[len(self.free) - k :][::-1], dtype=np.int64)
        del self.free[len(self.free) - k :]
        self.pool[slots] = windows
        self.slot_of[positions] = slots
        self.loaded_upto = piece.pos + piece.row_hi - piece.row_lo

    def take(self, k: int, out: np.ndarray) -> None:
        pos = self.need[self.taken : self.taken + k]
        self.taken += k
        if not len(pos):
            return
        while int(pos.max()) >= self.loaded_upto:
            self._load_next()
        slots = self.slot_of[pos]
        np.take(self.pool, slots, axis=0, out=out)
        self.free.extend(slots.tolist())


class PartStream:
    """The batches of one part (rank, worker): int16 windows (B, window, leads), `len(self)` per epoch."""

    def __init__(self, source: StreamSource, part: Part, *, window: int, batch_size: int, seed: int,
                 epoch_records: int = 0):
        if batch_size < 1:
            raise ConfigError("train.batch_size", f"must be positive, got {batch_size}")
        self.source, self.part, self.window, self.batch_size, self.seed = source, part, int(window), int(batch_size), int(seed)
        self.pools: dict[int, np.ndarray] = {}  # per corpus: window slots kept between epochs
        usable = source.usable_counts(self.window)
        self.usable = usable
        total = int(epoch_records) if epoch_records > 0 else int(sum(usable))
        if sum(usable) == 0:
            raise ConfigError("data.window", f"no record is at least {self.window} samples long")
        w = np.asarray(source.weights if source.weights else usable, dtype=np.float64)
        w = w / w.sum()
        # Records per epoch from each corpus: largest remainders, so the sum is exactly `total`.
        raw = w * total
        self.targets = np.floor(raw).astype(np.int64)
        self.targets[np.argsort(-(raw - self.targets))[: total - int(self.targets.sum())]] += 1
        for c, (t, n) in enumerate(zip(self.targets, usable)):
            if t > 0 and n == 0:
                raise ConfigError("data.pretrain_weights", f"{source.corpora[c].uri} has no record of {self.window} samples")
        self.steps = (total // part.count) // self.batch_size
        if self.steps == 0:
            raise ConfigError(
                "train.batch_size",
                f"{self.batch_size} is larger than the {total // part.count} windows per epoch of each of "
                f"{part.count} readers; lower the batch size",
            )

    def __len__(self) -> int:
        return self.steps

    def pieces(self, c: int, epoch: int, target: int) -> tuple[list[_Piece], int]:
        """The pieces of corpus c's epoch sequence that fall in this part, and the part's length."""
        n_usable = int(self.usable[c])
        lo, hi = part_bounds(target, self.part.index, self.part.count)
        out: list[_Piece] = []
        groups = self.source.corpora[c].groups
        sizes = np.array([len(self.source.usable_rows(c, g)) for g in groups], dtype=np.int64)
        pos = 0  # position in the epoch sequence
        for q in range(-(-target // n_usable) if n_usable else 0):
            for gi in np.random.default_rng([self.seed, epoch, c, q]).permutation(len(groups)):
                a, b = pos, pos + int(sizes[gi])
                pos = b
                if b <= lo or a >= hi or a == b:
                    continue
                out.append(_Piece(groups[gi], q, max(lo, a) - a, min(hi, b) - a, max(lo, a) - lo))
                if pos >= hi:
                    return out, hi - lo
        return out, hi - lo

    def order(self, epoch: int) -> np.ndarray:
        """(n, 2) int64 (corpus, corpus row) of every sample this part emits in `epoch`, in order
        (the batches hold the first len(self) x batch_size of them)."""
        labels = self.labels(epoch)
        result = np.empty((len(labels), 2), dtype=np.int64)
        for c in range(len(self.source.corpora)):
            pieces, n = self.pieces(c, epoch, int(self.targets[c]))
            rows = np.empty(n, dtype=np.int64)
            for p in pieces:
                usable = self.source.usable_rows(c, p.group)
                rows[p.pos : p.pos + p.row_hi - p.row_lo] = p.group.first + usable[p.row_lo : p.row_hi]
            rng = np.random.default_rng([self.seed, epoch, c, self.part.index, 1])
            sel = labels == c
            result[sel, 0] = c
            result[sel, 1] = rows[shuffle_order(n, self.source.buffer, rng)]
        return result

    def labels(self, epoch: int) -> np.ndarray:
        """Which corpus each sample of the part comes from, in emission order."""
        counts = []
        for t in self.targets:
            lo, hi = part_bounds(int(t), self.part.index, self.part.count)
            counts.append(hi - lo)
        labels = np.repeat(np.arange(len(counts)), counts)
        rng = np.random.default_rng([self.seed, epoch, self.part.index, 2])
        return rng.permutation(labels) if len(counts) > 1 else labels

    def batches(self, epoch: int, start: int = 0) -> Generator[np.ndarray, None, None]:
        """The epoch's batches from batch `start` on (the same ones an uninterrupted epoch yields there)."""
        labels = self.labels(epoch)
        end = self.steps * self.batch_size
        readers = []
        try:
            for c in range(len(self.source.corpora)):
                skip = int((labels[: start * self.batch_size] == c).sum())
                take = int((labels[start * self.batch_size : end] == c).sum())
                readers.append(_CorpusReader(self, c, epoch, int(self.targets[c]), skip, take))
            leads = len(self.source.lead_names)
            for b in range(start, self.steps):
                lab = labels[b * self.batch_size : (b + 1) * self.batch_size]
                out = np.empty((self.batch_size, self.window, leads), dtype=np.int16)
                for c, reader in enumerate(readers):
                    sel = np.flatnonzero(lab == c)
                    if len(sel) == len(lab):
                        reader.take(len(sel), out)
                    elif len(sel):
                        part = np.empty((len(sel),) + out.shape[1:], np.int16)
                        reader.take(len(sel), part)
                        out[sel] = part
                yield out
        finally:
            for reader in readers:
                reader.close()


class StreamSource:
    """Pretraining corpora opened for streaming, with what may be used of each (window-independent)."""

    def __init__(self, corpora: Sequence[StreamCorpus], *, keep: Sequence[np.ndarray] | None = None,
                 weights: Sequence[float] = (), buffer: int = 8192, part: Part | None = None):
        if not corpora:
            raise ConfigError("data.pretrain", "no pretraining dataset given")
        first = corpora[0]
        for c in corpora[1:]:
            if (c.lead_names, c.fs, c.units_per_mv) != (first.lead_names, first.fs, first.units_per_mv):
                raise ConfigError(
                    "data.pretrain",
                    f"{c.uri} has leads {list(c.lead_names)} at {c.fs} Hz but {first.uri} has "
                    f"{list(first.lead_names)} at {first.fs} Hz; ingest all pretraining datasets with the same "
                    "--fs and lead order",
                )
        if weights and (len(weights) != len(corpora) or min(weights) < 0 or sum(weights) <= 0):
            raise ConfigError("data.pretrain_weights", f"need {len(corpora)} non-negative weights, got {list(weights)}")
        if buffer < 1:
            raise ConfigError("data.shuffle_buffer", f"must be positive, got {buffer}")
        self.corpora = list(corpora)
        self.keep = [np.ones(len(c), bool) for c in corpora] if keep is None else [np.asarray(k, bool) for k in keep]
        if [len(k) for k in self.keep] != [len(c) for c in corpora]:
            raise ValueError("keep masks must match the corpora's record counts")
        self.weights = list(weights)
        self.buffer = int(buffer)
        self.part = part or Part()
        self._window = -1
        self._usable: list[list[np.ndarray]] = []
        self._group_index = [{(g.shard, g.group): i for i, g in enumerate(c.groups)} for c in self.corpora]

    @property
    def lead_names(self) -> tuple[str, ...]:
        return self.corpora[0].lead_names

    @property
    def fs(self) -> float:
        return self.corpora[0].fs

    @property
    def units_per_mv(self) -> float:
        return self.corpora[0].units_per_mv

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.corpora)

    def n_records(self) -> int:
        return int(sum(int(k.sum()) for k in self.keep))

    def _index(self, window: int) -> None:
        if window != self._window:
            self._usable = [
                [np.flatnonzero(k[g.first : g.first + g.rows] & (c.lengths[g.first : g.first + g.rows] >= window))
                 for g in c.groups]
                for c, k in zip(self.corpora, self.keep)
            ]
            self._window = window

    def usable_counts(self, window: int) -> list[int]:
        self._index(window)
        return [sum(len(u) for u in per) for per in self._usable]

    def usable_rows(self, c: int, group: RowGroup) -> np.ndarray:
        """Usable rows of `group` (indices within the group) for the window last indexed."""
        return self._usable[c][self._group_index[c][(group.shard, group.group)]]

    def part_stream(self, part: Part, *, window: int, batch_size: int, seed: int, epoch_records: int = 0) -> PartStream:
        return PartStream(self, part, window=window, batch_size=batch_size, seed=seed, epoch_records=epoch_records)
