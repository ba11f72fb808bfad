"""Data layer: source readers → Parquet shards (ingest) → in-memory datasets (open_dataset).

Imports numpy, pandas, pyarrow, scipy and wfdb only (never torch, ray, optuna or mlflow).
The imports are eager on purpose: `ingest` is both a module and the function exported here, and a
lazy export would hand out the module once anything imported `ecg_tune.data.ingest` directly.
"""

from __future__ import annotations

from ecg_tune.data.dataset import ECGDataset, format_summary, open_dataset
from ecg_tune.data.ingest import ingest, write_dataset
from ecg_tune.data.leakage import LeakageReport, duplicate_groups, find_leakage
from ecg_tune.data.manifest import Manifest

__all__ = [
    "ECGDataset",
    "LeakageReport",
    "Manifest",
    "duplicate_groups",
    "find_leakage",
    "format_summary",
    "ingest",
    "open_dataset",
    "write_dataset",
]
