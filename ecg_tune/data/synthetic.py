"""Synthetic 12-lead ECGs: the embedded default dataset (the quickstart sweep trains on it).

Model. Each record is a heart dipole (a 3-D vectorcardiogram in Frank X/Y/Z coordinates: X to the
patient's left, Y to the feet, Z to the back) built per beat from Gaussian waves (two atrial P
components, septal Q, main R, terminal S, an optional late QRS component for bundle branch blocks,
a two-part asymmetric T and a three-part ST plateau), each with its own 3-D direction. The dipole is
projected onto I, II and V1-V6 with Dower's inverse matrix; III, aVR, aVL and aVF are then derived
exactly as a recorder does (III = II - I, aVR = -(I + II)/2, aVL = I - II/2, aVF = II - I/2).
Noise is generated per electrode (RA, LA, LL, V1-V6) and enters the leads through the same lead
definitions, so the Einthoven/Goldberger relations hold exactly in every record, noisy or not.

Labels (`LABELS`, PTB-XL SCP-like codes; `SUPERCLASS` maps them to PTB-XL's diagnostic superclasses
for the "superdiagnostic" label set, where rhythm codes have no class, as in PTB-XL):
NORM none of the other codes was written; SBRAD sinus < 60 bpm; STACH sinus > 100 bpm; AFIB
irregular RR, no P wave, 4-9 Hz fibrillatory waves; 1AVB PR > 200 ms; CRBBB late rightward-anterior
QRS force (rSR' in V1-V2, broad S in I/V6, QRS >= 120 ms); CLBBB no septal q, broad notched R in
I/V5/V6, QS in V1-V3, discordant T; LVH higher R in V5/V6 and deeper S in V1/V2 (some with strain);
STE_INF/STE_ANT/STE_LAT ST elevation in II/III/aVF, V1-V4, I/aVL/V5/V6 (with the reciprocal
depressions an injury vector implies); STD_ANT ST depression in V1-V3; STD_LAT ST depression in I,
II, V3-V6 with elevation in aVR. Codes co-occur freely except where physiology forbids (one rhythm;
CRBBB xor CLBBB; STE xor STD in a lead group; no 1AVB in AFIB). Chronic substrate (AV conduction,
bundle branch block, LVH) belongs to the patient and recurs in each of the patient's records.

Truth vs. annotation. The signal follows the true physiology (`Cohort.rhythm`, `Cohort.st_size`,
`Cohort.morph`); the labels are what a reader would write: graded findings (PR, right-bundle delay,
ST size) are read against clinical thresholds with measurement error, so records near a threshold go
either way, and `MISSED_CODE_RATE` of present codes are left out. Coded rate/rhythm codes are always
true. Class overlap comes from physiology: per-patient axis (3-D rotation), voltages and durations;
LVH that raises the voltage little; incomplete RBBB (uncoded); subthreshold ST shifts, benign early
repolarisation and LV strain (uncoded); premature beats in sinus rhythm; and noise (baseline wander,
muscle noise, powerline residue, electrode motion) of record-varying size. Measured difficulty: see
tests/data/test_synthetic.py (crude-feature logistic regression ~0.8 macro AUC).

Determinism: the cohort (patients, labels, folds) comes from one seeded stream; signals are made in
fixed chunks of `CHUNK` records, each from its own stream, with noise on a separate stream (so
`noise=False` gives the same hearts without the noise). Same arguments → bit-identical records.
Records depend on `n_records` (folds are stratified over the whole cohort). Changing any of this
model means bumping `GENERATOR_VERSION`, which is part of the dataset's `source_version`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ecg_tune.data.folds import stratified_group_folds
from ecg_tune.data.ingest import write_dataset
from ecg_tune.data.leads import DEFAULT_ORDER
from ecg_tune.data.manifest import Manifest
from ecg_tune.data.record import RawRecord
from ecg_tune.data.synthetic_cohort import make_cohort
from ecg_tune.data.synthetic_model import (
    AFIB,
    ALIAS_RESIDUE,
    CHUNK,
    DOWER,
    GENERATOR_VERSION,
    LABEL_DESCRIPTIONS,
    LABELS,
    MISSED_CODE_RATE,
    N_FOLDS,
    SBRAD,
    SINUS,
    ST_CODES,
    STACH,
    SUPERCLASS,
    SUPERCLASSES,
    Cohort,
    label_lists,
)
from ecg_tune.data.synthetic_signal import leads_from_channels, synthesize
from ecg_tune.errors import ConfigError

__all__ = [
    "AFIB", "ALIAS_RESIDUE", "CHUNK", "Cohort", "DOWER", "GENERATOR_VERSION", "LABELS", "LABEL_DESCRIPTIONS", "MISSED_CODE_RATE", "N_FOLDS", "SBRAD", "SINUS", "STACH", "ST_CODES", "SUPERCLASS", "SUPERCLASSES", "generate_records", "label_lists", "leads_from_channels", "make_cohort", "stratified_group_folds", "synthesize", "write_synthetic",
]

def generate_records(
    n_records: int, seed: int = 0, fs: float = 100.0, duration_s: float = 10.0, *, noise: bool = True
) -> Iterator[RawRecord]:
    """`n_records` synthetic records "syn-000001"...; signals float64 (12, T) mV in DEFAULT_ORDER.

    `noise=False` leaves out baseline wander, muscle, powerline and motion noise (same hearts, same
    labels); used by tests that measure the cardiac signal itself.
    """
    if n_records < 0:
        raise ConfigError("n_records", f"must be >= 0, got {n_records}")
    if not fs > 0:
        raise ConfigError("fs", f"must be > 0, got {fs}")
    if not duration_s * fs >= 1:
        raise ConfigError("duration_s", f"gives no samples at fs={fs}: {duration_s}")
    cohort = make_cohort(n_records, seed)
    for chunk_no, first in enumerate(range(0, n_records, CHUNK)):
        rows = np.arange(first, min(first + CHUNK, n_records))
        signals = synthesize(cohort, rows, seed, chunk_no, fs, duration_s, noise=noise)
        for i, sig in zip(rows, signals):
            record_id = f"syn-{i + 1:06d}"
            yield RawRecord(
                record_id=record_id,
                source="synthetic",
                fs=float(fs),
                signal=sig,
                lead_names=list(DEFAULT_ORDER),
                labels=label_lists(cohort.labels[i]),
                patient_id=f"synp-{cohort.patient[i] + 1:06d}",
                fold=int(cohort.fold[i]),
                age=float(cohort.age[i]),
                sex="M" if cohort.male[i] else "F",
                path=f"synthetic://seed{seed}/{record_id}",
            )


def write_synthetic(
    out: str | Path, n_records: int = 2000, seed: int = 0, fs: float = 100.0, records_per_shard: int = 2000
) -> Manifest:
    """Generate and ingest a synthetic dataset into `out` (shards + manifest); returns the manifest."""
    return write_dataset(
        generate_records(n_records, seed=seed, fs=fs),
        out,
        source="synthetic",
        source_version=f"ecg-tune-synthetic-{GENERATOR_VERSION}-seed{seed}",
        fs=fs,
        lead_order="default",
        records_per_shard=records_per_shard,
    )
