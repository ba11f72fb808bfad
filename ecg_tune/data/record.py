"""The record type that every source reader yields and the ingest writes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class RawRecord:
    """One ECG as a source reader returns it, before resampling and encoding.

    `signal` is float (leads, time) in millivolts, in the order of `lead_names` (already normalised
    with `normalise_lead_name`). `labels` maps a label set name ("all", "diagnostic", "snomed", ...) to
    the codes of this record. `fold` is the source's own fold (PTB-XL strat_fold 1-10) or None, in
    which case ingest assigns 10 stratified folds grouped by patient.
    """

    record_id: str
    source: str
    fs: float
    signal: np.ndarray
    lead_names: list[str]
    labels: dict[str, list[str]] = field(default_factory=dict)
    patient_id: str | None = None
    fold: int | None = None
    age: float | None = None
    sex: str | None = None  # "M" | "F" | None
    path: str = ""  # the file it came from, for error messages and quarantine entries
