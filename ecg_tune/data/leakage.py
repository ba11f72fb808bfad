"""Leakage guard: pretraining records that are (copies of) downstream validation/test records.

Two identities are checked. `origin_id` is the cross-corpus id a source assigns (CinC's `HR00456` and
PTB-XL's record 456 are both `ptbxl:456`); `signal_hash` is the sha256 of the stored int16 signal, which
catches exact copies under another name, but only between datasets ingested at the same rate and lead
order (a resampled copy has other bytes; origin_id still catches the known ones).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ecg_tune.data.dataset import ECGDataset


@dataclass
class LeakageReport:
    indices: np.ndarray  # int64 row indices of pretraining records to drop
    record_ids: list[str]
    by_reason: dict[str, int] = field(default_factory=dict)  # "origin_id" / "signal_hash": records matched that way
    folds: tuple[int, ...] = (9, 10)

    @property
    def count(self) -> int:
        return len(self.indices)

    def exclude(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """`indices` without the leaking records."""
        indices = np.asarray(indices, dtype=np.int64)
        return indices[~np.isin(indices, self.indices)]


def find_leakage(pretrain: ECGDataset, downstream: ECGDataset, folds: Iterable[int] = (9, 10)) -> LeakageReport:
    """Pretraining records whose origin_id or signal_hash matches a downstream record in `folds`."""
    folds = tuple(int(f) for f in folds)
    held_out = downstream.records.iloc[downstream.indices(folds)]
    origins = set(held_out["origin_id"])
    hashes = set(held_out["signal_hash"])
    by_origin = pretrain.records["origin_id"].isin(origins).to_numpy()
    by_hash = pretrain.records["signal_hash"].isin(hashes).to_numpy()
    indices = np.flatnonzero(by_origin | by_hash).astype(np.int64)
    return LeakageReport(
        indices=indices,
        record_ids=pretrain.records["record_id"].iloc[indices].tolist(),
        by_reason={"origin_id": int(by_origin.sum()), "signal_hash": int(by_hash.sum())},
        folds=folds,
    )


def duplicate_groups(ds: ECGDataset) -> list[list[str]]:
    """Record ids sharing one signal hash (exact duplicates), each group sorted, groups by first id."""
    groups = ds.records.groupby("signal_hash", sort=False)["record_id"].agg(list)
    return sorted(sorted(g) for g in groups if len(g) > 1)
