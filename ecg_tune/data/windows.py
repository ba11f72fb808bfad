"""Fixed-length windows cut from a `SignalStore`: random crops for training, sliding windows for evaluation.

Every function gathers with one fancy index over the store's contiguous int16 array (no Python loop
per window) and returns float32 millivolts shaped (windows, leads, window). Records shorter than the
window start at 0 and are zero-padded on the right.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ecg_tune.data.normalization import normalize  # noqa: F401 (its home is normalization.py)
from ecg_tune.data.store import SignalStore
from ecg_tune.errors import ConfigError


def _check_window(window: int) -> int:
    if int(window) != window or window < 1:
        raise ConfigError("window", f"must be a positive whole number of samples, got {window!r}")
    return int(window)


def random_starts(lengths: np.ndarray, window: int, rng: np.random.Generator) -> np.ndarray:
    """One start per record, uniform over 0..length - window INCLUSIVE (0 when the record is shorter).

    The reference code draws from 0..length - window - 1 and never picks the last position (paper notes
    §8 item 7); this does not copy that.
    """
    window = _check_window(window)
    last = np.maximum(np.asarray(lengths, dtype=np.int64) - window, 0)
    return rng.integers(0, last + 1, dtype=np.int64) if last.size else np.zeros(0, dtype=np.int64)


def sliding_starts(length: int, window: int, stride: int) -> np.ndarray:
    """Starts 0, stride, 2·stride, ... plus, if those miss the record's end, one window ending exactly
    at it, so that every sample is covered (given stride <= window). A record no longer than the window
    gives one window at 0."""
    return _sliding(np.array([length], dtype=np.int64), window, stride)[1]


def _sliding(lengths: np.ndarray, window: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(record position, start) of every sliding window over records of `lengths`, in order."""
    window = _check_window(window)
    if int(stride) != stride or stride < 1:
        raise ConfigError("stride", f"must be a positive whole number of samples, got {stride!r}")
    last = np.maximum(lengths - window, 0)  # the start of the window that ends at the record end
    counts = last // stride + 1 + (last % stride != 0)
    record_pos = np.repeat(np.arange(len(lengths), dtype=np.int64), counts)
    first = np.cumsum(counts) - counts  # index of each record's first window
    j = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(first, counts)
    return record_pos, np.minimum(j * stride, last[record_pos])


def gather_windows(
    store: SignalStore,
    indices: Sequence[int] | np.ndarray,
    starts: np.ndarray,
    window: int,
    *,
    lead_indices: Sequence[int] | np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Windows record indices[k][starts[k] : starts[k] + window] → float32 (B, leads, window) in mV.

    Samples past a record's end are zeros. `lead_indices` selects and orders leads (default: all);
    `out`, if given, is filled and returned (float32, C-contiguous, shape (B, leads, window)).
    """
    window = _check_window(window)
    indices = np.asarray(indices, dtype=np.int64)
    starts = np.asarray(starts, dtype=np.int64)
    if indices.shape != starts.shape or indices.ndim != 1:
        raise ValueError(f"indices {indices.shape} and starts {starts.shape} must be equal 1-D shapes")
    leads = np.arange(store.n_leads) if lead_indices is None else np.asarray(lead_indices, dtype=np.int64)
    shape = (len(indices), len(leads), window)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise ValueError(f"out must be float32 {shape}, got {out.dtype} {out.shape}")

    if store.data.shape[0] == 0:  # only empty records: all padding
        out.fill(0.0)
        return out
    pos = starts[:, None] + np.arange(window)  # (B, W) sample positions inside each record
    inside = pos < store.lengths[indices][:, None]
    rows = np.where(inside, store.offsets[indices][:, None] + pos, 0)  # row 0 stands in for padding
    raw = np.take(store.data, rows, axis=0)  # one gather of whole rows: (B, W, all leads) int16
    if lead_indices is not None:  # (a row gather then a lead pick is ~7x faster than one 3-D fancy index)
        raw = raw[:, :, leads]
    # Divide (not multiply by the reciprocal) so that values equal SignalStore.signal bit for bit.
    np.divide(raw.transpose(0, 2, 1), np.float32(store.units_per_mv), out=out)
    if not inside.all():
        out *= inside[:, None, :]
    return out


def random_windows(
    store: SignalStore,
    indices: Sequence[int] | np.ndarray,
    window: int,
    rng: np.random.Generator,
    *,
    lead_indices: Sequence[int] | np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """One random crop per record → float32 (B, leads, window) mV.

    Starts come from `random_starts(store.lengths[indices], window, rng)`, so the same generator state
    gives the same crops.
    """
    indices = np.asarray(indices, dtype=np.int64)
    starts = random_starts(store.lengths[indices], window, rng)
    return gather_windows(store, indices, starts, window, lead_indices=lead_indices, out=out)


def sliding_windows(
    store: SignalStore,
    indices: Sequence[int] | np.ndarray,
    window: int = 250,
    stride: int = 125,
    *,
    lead_indices: Sequence[int] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Evaluation windows covering each record (see `sliding_starts`).

    Returns (windows float32 (N, leads, window) mV, record_pos int64 (N,)), where record_pos[k] is the
    position in `indices` of the record that window k comes from; windows of a record are consecutive.
    """
    indices = np.asarray(indices, dtype=np.int64)
    record_pos, starts = _sliding(store.lengths[indices], window, stride)
    windows = gather_windows(store, indices[record_pos], starts, window, lead_indices=lead_indices)
    return windows, record_pos
