"""The in-memory signal store: every record of a dataset in one contiguous int16 array + offsets.

Samplers slice this array directly (no per-sample file access), so window sampling runs at memory
speed, and the arrays can be shared between processes without copies (Ray's object store keeps numpy
arrays zero-copy; see `ecg_tune.tune.shared`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SignalStore:
    data: np.ndarray  # int16 (total_samples, n_leads), time-major, records concatenated
    offsets: np.ndarray  # int64 (n_records,): first row of each record in `data`
    lengths: np.ndarray  # int64 (n_records,): samples of each record
    units_per_mv: float  # data / units_per_mv = millivolts
    lead_names: tuple[str, ...]
    fs: float

    def __post_init__(self) -> None:
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        self.lengths = np.asarray(self.lengths, dtype=np.int64)
        if self.data.ndim != 2 or self.data.shape[1] != len(self.lead_names):
            raise ValueError(f"store data must be (time, {len(self.lead_names)} leads), got {self.data.shape}")
        if len(self.offsets) != len(self.lengths):
            raise ValueError("offsets and lengths differ in length")
        if len(self.offsets) and int((self.offsets + self.lengths).max()) > self.data.shape[0]:
            raise ValueError("a record extends past the end of the store")

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def n_leads(self) -> int:
        return self.data.shape[1]

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes + self.offsets.nbytes + self.lengths.nbytes)

    @staticmethod
    def nbytes_for(lengths: np.ndarray, n_leads: int) -> int:
        """`nbytes` of a store holding records of these lengths back to back (as open_dataset builds it)."""
        return int(np.sum(lengths, dtype=np.int64)) * n_leads * 2 + 2 * 8 * len(lengths)

    def signal(self, index: int) -> np.ndarray:
        """Record `index` as float32 (leads, time) in mV."""
        start = int(self.offsets[index])
        raw = self.data[start : start + int(self.lengths[index])]
        return (raw.T.astype(np.float32)) / np.float32(self.units_per_mv)

    @classmethod
    def concat(cls, stores: list[SignalStore]) -> SignalStore:
        """One store holding the records of several (same leads, fs and encoding), in order."""
        first = stores[0]
        for s in stores[1:]:
            if (s.lead_names, s.fs, s.units_per_mv) != (first.lead_names, first.fs, first.units_per_mv):
                raise ValueError(
                    f"cannot mix stores with leads/fs/units {s.lead_names}/{s.fs}/{s.units_per_mv} and "
                    f"{first.lead_names}/{first.fs}/{first.units_per_mv}; ingest both with the same --fs and lead order"
                )
        if len(stores) == 1:
            return first
        shifts = np.cumsum([0] + [s.data.shape[0] for s in stores[:-1]])
        return cls(
            np.concatenate([s.data for s in stores]),
            np.concatenate([s.offsets + shift for s, shift in zip(stores, shifts)]),
            np.concatenate([s.lengths for s in stores]),
            first.units_per_mv,
            first.lead_names,
            first.fs,
        )

    @classmethod
    def from_signals(
        cls, signals: list[np.ndarray], lead_names: tuple[str, ...], fs: float, units_per_mv: float = 1000.0
    ) -> SignalStore:
        """Build a store from float (leads, time) mV arrays (used by tests and the synthetic generator)."""
        lengths = np.array([s.shape[1] for s in signals], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        data = np.empty((int(lengths.sum()), len(lead_names)), dtype=np.int16)
        for s, o, n in zip(signals, offsets, lengths):
            data[o : o + n] = quantise(s.T, units_per_mv)
        return cls(data, offsets, lengths, units_per_mv, tuple(lead_names), float(fs))


def quantise(signal_mv: np.ndarray, units_per_mv: float) -> np.ndarray:
    """mV float → int16 at `units_per_mv`, saturating at the int16 range."""
    q = np.rint(np.asarray(signal_mv, dtype=np.float64) * units_per_mv)
    return np.clip(q, -32768, 32767).astype(np.int16)
