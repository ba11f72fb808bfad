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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecg_tune.data.ingest import write_dataset
from ecg_tune.data.leads import DEFAULT_ORDER
from ecg_tune.data.manifest import Manifest
from ecg_tune.data.record import RawRecord
from ecg_tune.errors import ConfigError

GENERATOR_VERSION = "1"
CHUNK = 250  # records synthesised together; part of the determinism contract
N_FOLDS = 10

LABELS: tuple[str, ...] = (
    "NORM", "SBRAD", "STACH", "AFIB", "1AVB", "CRBBB", "CLBBB", "LVH",
    "STE_INF", "STE_ANT", "STE_LAT", "STD_ANT", "STD_LAT",
)
LABEL_DESCRIPTIONS: dict[str, str] = {
    "NORM": "normal ECG: sinus rhythm 60-100 bpm, none of the other codes",
    "SBRAD": "sinus bradycardia (< 60 bpm)",
    "STACH": "sinus tachycardia (> 100 bpm)",
    "AFIB": "atrial fibrillation: irregular RR, no P wave, 4-9 Hz f-waves",
    "1AVB": "first-degree AV block (PR > 200 ms)",
    "CRBBB": "complete right bundle branch block (QRS >= 120 ms, rSR' in V1-V2)",
    "CLBBB": "complete left bundle branch block (QRS >= 120 ms, broad notched R in I/V5/V6)",
    "LVH": "left ventricular hypertrophy (voltage criteria, some with strain)",
    "STE_INF": "ST elevation in II, III, aVF (inferior injury)",
    "STE_ANT": "ST elevation in V1-V4 (anterior injury)",
    "STE_LAT": "ST elevation in I, aVL, V5, V6 (lateral injury)",
    "STD_ANT": "ST depression in V1-V3",
    "STD_LAT": "ST depression in I, II, V3-V6 with ST elevation in aVR",
}
# PTB-XL diagnostic superclasses; rhythm codes have none (as in PTB-XL), so a record whose only
# codes are rhythm codes has an empty "superdiagnostic" list.
SUPERCLASS: dict[str, str] = {
    "NORM": "NORM", "1AVB": "CD", "CRBBB": "CD", "CLBBB": "CD", "LVH": "HYP",
    "STE_INF": "MI", "STE_ANT": "MI", "STE_LAT": "MI", "STD_ANT": "STTC", "STD_LAT": "STTC",
}
SUPERCLASSES: tuple[str, ...] = ("NORM", "MI", "STTC", "CD", "HYP")

_L = {name: j for j, name in enumerate(LABELS)}
ST_CODES: tuple[str, ...] = ("STE_INF", "STE_ANT", "STE_LAT", "STD_ANT", "STD_LAT")
SINUS, SBRAD, STACH, AFIB = 0, 1, 2, 3  # Cohort.rhythm values
MISSED_CODE_RATE = 0.05  # share of present codes the annotator leaves out

# Dower's inverse transform, Frank X/Y/Z (mV) → I, II, V1..V6 (Dower et al. 1988).
DOWER = np.array([
    [0.632, -0.235, 0.059],
    [0.235, 1.066, -0.132],
    [-0.515, 0.157, -0.917],
    [0.044, 0.164, -1.387],
    [0.882, 0.098, -1.277],
    [1.213, 0.127, -0.601],
    [1.125, 0.127, -0.086],
    [0.831, 0.076, 0.230],
])
# Electrodes RA, LA, LL, V1..V6 → recorded channels I, II, V1..V6 (V leads against Wilson's terminal).
_ELECTRODES = np.zeros((8, 9))
_ELECTRODES[0, :2] = [-1.0, 1.0]
_ELECTRODES[1, [0, 2]] = [-1.0, 1.0]
_ELECTRODES[2:, :3] = -1.0 / 3.0
_ELECTRODES[2:, 3:] = np.eye(6)

# Powerline components at or above the Nyquist frequency would not survive a recorder's anti-alias
# filter; what is left of them (sampled directly, so aliased) is scaled by this residue.
ALIAS_RESIDUE = 0.05


def _unit(*v: float) -> np.ndarray:
    a = np.array(v, dtype=np.float64)
    return a / np.linalg.norm(a)


# Wave directions in Frank coordinates (unit vectors) and typical magnitudes (mV).
_P_RA, _P_LA = _unit(0.2, 0.75, -0.45), _unit(0.75, 0.45, 0.45)
_Q_SEPT = _unit(-0.35, 0.05, -0.55)
_R_MAIN = _unit(0.75, 0.55, 0.35)
_S_TERM = _unit(-0.25, -0.35, 0.55)
_R_PRIME = _unit(-0.45, 0.1, -0.85)  # CRBBB: late right-ventricular activation towards V1
_LB_1, _LB_2 = _unit(0.55, 0.2, 0.8), _unit(0.8, 0.15, 0.55)  # CLBBB: slow leftward-posterior activation
_T_NORM = _unit(0.6, 0.5, -0.25)
_T_LBBB = _unit(-0.6, -0.2, -0.7)  # discordant to the CLBBB QRS
_ST_DIR = {  # injury-current directions, keyed by ST_CODES
    "STE_INF": _unit(-0.2, 1.0, 0.05), "STE_ANT": _unit(0.1, 0.0, -1.0), "STE_LAT": _unit(1.0, -0.4, 0.2),
    "STD_ANT": _unit(0.0, -0.1, 1.0), "STD_LAT": _unit(-1.0, -0.2, 0.1),
}
_EARLY_REPOL = _unit(0.5, 0.4, -0.75)
_F_WAVE = _unit(-0.2, 0.5, -0.85)  # atrial fibrillatory activity, seen best in V1 and inferior leads


@dataclass(frozen=True)
class Cohort:
    """Everything about the records except their signals: drawn once for the whole dataset."""

    patient: np.ndarray  # int64 (n,): patient index of each record
    age: np.ndarray  # float64 (n,), whole years
    male: np.ndarray  # bool (n,)
    labels: np.ndarray  # bool (n, len(LABELS)): the codes as annotated (what the dataset carries)
    rhythm: np.ndarray  # int8 (n,): SINUS, SBRAD, STACH or AFIB, the rhythm the signal follows
    st_size: np.ndarray  # float64 (n, len(ST_CODES)): true injury-current size (mV), 0 = none
    fold: np.ndarray  # int64 (n,), 1..N_FOLDS
    morph: dict[str, np.ndarray]  # per-patient heart, first axis = patient


def label_lists(labels_row: np.ndarray) -> dict[str, list[str]]:
    """One record's bool label row → its label sets ("all" and "superdiagnostic")."""
    codes = [c for c, on in zip(LABELS, labels_row) if on]
    supers = {SUPERCLASS[c] for c in codes if c in SUPERCLASS}
    return {"all": codes, "superdiagnostic": [s for s in SUPERCLASSES if s in supers]}


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


# ---------------------------------------------------------------------------------------------------
# Cohort: patients, labels, folds


def make_cohort(n_records: int, seed: int) -> Cohort:
    rng = np.random.default_rng([seed, 0])
    # Records per patient: most patients have one record, some several (as in PTB-XL).
    sizes = rng.choice([1, 2, 3, 4], size=max(n_records, 1), p=[0.82, 0.12, 0.04, 0.02])
    n_patients = int(np.searchsorted(np.cumsum(sizes), n_records) + 1) if n_records else 0
    sizes = sizes[:n_patients]
    if n_patients:
        sizes[-1] -= int(sizes.sum()) - n_records
    patient = rng.permutation(np.repeat(np.arange(n_patients), sizes))  # a patient's records are scattered

    p_age = np.clip(np.rint(rng.normal(60.0, 17.0, n_patients)), 18, 95)
    p_male = rng.random(n_patients) < 0.52
    several = np.bincount(patient, minlength=n_patients)[patient] > 1
    age = p_age[patient] + rng.integers(0, 4, n_records) * several
    morph = _patient_morphology(rng, n_patients, p_age, p_male)

    # Record-level truth: rhythm (AF grows with age) and ST injury currents per lead group.
    u = rng.random(n_records)
    p_af = 0.07 * np.exp(0.03 * (p_age[patient] - 60.0))
    rhythm = np.select([u < p_af, u < p_af + 0.07, u < p_af + 0.13], [AFIB, SBRAD, STACH], SINUS).astype(np.int8)
    st_size = np.zeros((n_records, len(ST_CODES)))
    for group, p_group in ((("STE_INF",), (0.065,)), (("STE_ANT", "STD_ANT"), (0.06, 0.045)),
                           (("STE_LAT", "STD_LAT"), (0.045, 0.075))):
        u = rng.random(n_records)
        bounds = np.cumsum(p_group)
        for j, code in enumerate(group):
            hit = (u >= (bounds[j - 1] if j else 0.0)) & (u < bounds[j])
            # From imperceptible to obvious; about a fifth stay below the reading threshold.
            st_size[:, ST_CODES.index(code)] = hit * rng.uniform(0.0, 0.32, n_records)

    labels = _annotate(rng, patient, rhythm, st_size, morph)
    fold = stratified_group_folds(labels, patient, rng, N_FOLDS)
    return Cohort(patient, age.astype(np.float64), p_male[patient], labels, rhythm, st_size, fold, morph)


def _annotate(rng: np.random.Generator, patient: np.ndarray, rhythm: np.ndarray, st_size: np.ndarray,
              morph: dict[str, np.ndarray]) -> np.ndarray:
    """The codes a cardiologist writes for each record: graded findings are read against clinical
    thresholds with some measurement error (so records near a threshold go either way), and a few
    codes are simply missed. This, not random label flips, is what keeps the task from being perfect."""
    n = len(patient)
    labels = np.zeros((n, len(LABELS)), dtype=bool)
    labels[:, _L["SBRAD"]] = rhythm == SBRAD
    labels[:, _L["STACH"]] = rhythm == STACH
    labels[:, _L["AFIB"]] = rhythm == AFIB
    pr = morph["pr"][patient] + rng.normal(0.0, 0.008, n)
    labels[:, _L["1AVB"]] = (pr > 0.200) & (rhythm != AFIB)  # no P wave, no PR interval in AF
    delay = morph["rbbb_delay"][patient]
    labels[:, _L["CRBBB"]] = (delay > 0) & (delay + rng.normal(0.0, 0.004, n) >= 0.045)  # QRS >= ~120 ms
    labels[:, _L["CLBBB"]] = morph["clbbb"][patient]
    labels[:, _L["LVH"]] = morph["lvh"][patient]
    for j, code in enumerate(ST_CODES):
        seen = st_size[:, j] + rng.normal(0.0, 0.03, n)
        labels[:, _L[code]] = (st_size[:, j] > 0) & (seen >= 0.08)
    labels[:, 1:] &= rng.random((n, len(LABELS) - 1)) >= MISSED_CODE_RATE
    labels[:, _L["NORM"]] = ~labels[:, 1:].any(axis=1)
    return labels


def stratified_group_folds(labels: np.ndarray, groups: np.ndarray, rng: np.random.Generator, n_folds: int) -> np.ndarray:
    """Folds 1..n_folds: whole groups (patients) per fold, label counts balanced greedily.

    Groups are placed rarest-label first (larger groups first among equals, random ties), each into
    the fold that most lacks its labels and records relative to an even share.
    """
    n = len(groups)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    n_groups = int(groups.max()) + 1
    g_counts = np.zeros((n_groups, labels.shape[1]))
    np.add.at(g_counts, groups, labels.astype(np.float64))
    g_sizes = np.bincount(groups, minlength=n_groups).astype(np.float64)
    totals = labels.sum(axis=0).astype(np.float64)
    rarity = np.where(g_counts > 0, totals, np.inf).min(axis=1)
    order = np.lexsort((rng.random(n_groups), -g_sizes, rarity))
    want_labels = np.maximum(totals / n_folds, 1e-9)
    want_size = n / n_folds
    have_labels = np.zeros((n_folds, labels.shape[1]))
    have_size = np.zeros(n_folds)
    g_fold = np.zeros(n_groups, dtype=np.int64)
    for g in order:
        if g_sizes[g] == 0:
            continue
        present = g_counts[g] > 0
        need = ((want_labels[present] - have_labels[:, present]) / want_labels[present]).sum(axis=1)
        need += (want_size - have_size) / want_size
        f = int(np.argmax(need))
        g_fold[g] = f
        have_labels[f] += g_counts[g]
        have_size[f] += g_sizes[g]
    return g_fold[groups] + 1


def _patient_morphology(rng: np.random.Generator, n: int, age: np.ndarray, male: np.ndarray) -> dict[str, np.ndarray]:
    """Per-patient heart: axis, voltages, durations and chronic conduction/hypertrophy substrate."""
    # Electrical axis and heart position: rotation about X, Y (precordial transition), Z (frontal axis).
    ang = rng.normal(0.0, 1.0, (n, 3)) * np.radians([10.0, 20.0, 25.0])
    scale = np.exp(rng.normal(0.0, 0.25, n)) * np.where(male, 1.0, 0.85) * np.clip(1 - 0.004 * (age - 55), 0.75, 1.2)
    risk = np.exp(0.03 * (age - 60.0))  # conduction disease grows with age
    u = rng.random(n)
    rbbb = u < 0.07 * risk
    clbbb = (u >= 0.07 * risk) & (u < 0.105 * risk)
    # Right-bundle delay of the late R' (s): incomplete forms (< ~45 ms) are not labelled CRBBB.
    delay = np.where(rbbb, rng.uniform(0.02, 0.09, n), 0.0)
    avb = rng.random(n) < 0.06 * risk
    lvh = rng.random(n) < 0.10 * np.where(male, 1.3, 0.7)
    # Many hypertrophied hearts raise the voltage only a little (ECG criteria miss about half of LVH).
    lvh_gain = np.where(lvh, 1 + 0.75 * rng.uniform(0.0, 1.0, n) ** 1.5, 1.0)
    strain = (lvh_gain > 1.4) & (rng.random(n) < 0.5)
    # Normal hearts: a small nonspecific ST vector, and early repolarisation (benign anterolateral ST
    # elevation) in some younger men; neither is coded, both resemble mild injury patterns.
    st_rest = rng.normal(0.0, 0.02, (n, 3))
    early_repol = male & (age < 50) & (rng.random(n) < 0.25)
    st_rest += np.where(early_repol, rng.uniform(0.05, 0.2, n), 0.0)[:, None] * _EARLY_REPOL
    st_rest += np.where(strain, rng.uniform(0.03, 0.12, n), 0.0)[:, None] * _ST_DIR["STD_LAT"]  # LV strain
    return {
        "rotation": _rotations(ang),
        "scale": scale,
        "wave_gain": np.exp(rng.normal(0.0, 0.2, (n, 5))),  # P, Q, R, S, T
        "qrs_width": np.clip(rng.normal(1.0, 0.08, n), 0.8, 1.2) * np.where(male, 1.0, 0.95),
        "pr": np.where(avb, rng.uniform(0.18, 0.34, n), rng.uniform(0.12, 0.195, n)),
        "qtc": rng.normal(0.41, 0.015, n) + np.where(male, 0.0, 0.012),
        "lvh": lvh,
        "lvh_gain": lvh_gain,
        "lvh_strain": strain,
        "st_rest": st_rest,
        "rbbb_delay": delay,
        "r_prime": rng.uniform(0.45, 0.9, n) * np.clip(delay / 0.06, 0.35, 1.0),
        "clbbb": clbbb,
    }


def _rotations(ang: np.ndarray) -> np.ndarray:
    """(n, 3) angles about X, Y, Z → (n, 3, 3) rotation matrices Rz @ Ry @ Rx."""
    cx, cy, cz = np.cos(ang).T
    sx, sy, sz = np.sin(ang).T
    one, zero = np.ones_like(cx), np.zeros_like(cx)
    rx = np.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1).reshape(-1, 3, 3)
    ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(-1, 3, 3)
    rz = np.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1).reshape(-1, 3, 3)
    return rz @ ry @ rx


# ---------------------------------------------------------------------------------------------------
# Signals


def synthesize(
    cohort: Cohort, rows: np.ndarray, seed: int, chunk_no: int, fs: float, duration_s: float, *, noise: bool = True
) -> np.ndarray:
    """Signals of cohort records `rows` (one chunk) → float64 (B, 12, T) mV in DEFAULT_ORDER."""
    rng = np.random.default_rng([seed, 1, chunk_no])
    n_samples = int(round(duration_s * fs))
    rhythm = cohort.rhythm[rows]
    m = {k: v[cohort.patient[rows]] for k, v in cohort.morph.items()}
    b = len(rows)

    beats, rr_prev, beat_amp, f_resp, phi_resp = _beat_times(rng, rhythm, duration_s)
    vcg = np.zeros((3, b, n_samples + 2 * _pad(fs)))
    _add_waves(vcg, *_qrs_and_p(rng, m, rhythm == AFIB, beats, beat_amp), beats, fs)
    _add_waves(vcg, *_st_and_t(rng, m, cohort.st_size[rows], rr_prev, beat_amp), beats, fs)
    vcg = vcg[:, :, _pad(fs) : _pad(fs) + n_samples].transpose(1, 0, 2)  # (B, 3, T)
    t = np.arange(n_samples) / fs
    _add_f_waves(rng, vcg, rhythm == AFIB, t)

    channels = np.einsum("lj,bjt->blt", DOWER, vcg)  # I, II, V1..V6
    # Amplifier gain and V-electrode placement differences, drawn before noise so that noise=False
    # keeps every other draw the same.
    gains = np.concatenate([rng.normal(1.0, 0.02, (b, 2)), rng.normal(1.0, 0.06, (b, 6))], axis=1)
    if noise:
        nrng = np.random.default_rng([seed, 2, chunk_no])
        electrodes = _electrode_noise(nrng, b, t, fs, f_resp, phi_resp)
        channels += np.einsum("le,bet->blt", _ELECTRODES, electrodes)
    channels *= gains[:, :, None]
    return leads_from_channels(channels)


def leads_from_channels(channels: np.ndarray) -> np.ndarray:
    """(..., 8, T) recorded I, II, V1..V6 → (..., 12, T) in DEFAULT_ORDER; limb leads derived exactly."""
    i, ii = channels[..., 0, :], channels[..., 1, :]
    out = np.empty(channels.shape[:-2] + (12, channels.shape[-1]), dtype=channels.dtype)
    out[..., 0, :] = i
    out[..., 1, :] = ii
    out[..., 2, :] = ii - i  # III
    out[..., 3, :] = -(i + ii) / 2  # aVR
    out[..., 4, :] = i - ii / 2  # aVL
    out[..., 5, :] = ii - i / 2  # aVF
    out[..., 6:, :] = channels[..., 2:, :]
    return out


def _pad(fs: float) -> int:
    # Beats are kept from 1.2 s before the record to 0.6 s after it; their waves reach at most ~1 s
    # further, so 2.5 s of padding on each side holds every wave whole.
    return int(np.ceil(2.5 * fs))


_MIN_RR = 0.25


_Arrays = tuple[np.ndarray, ...]


def _beat_times(rng: np.random.Generator, rhythm: np.ndarray, duration_s: float) -> _Arrays:
    """QRS onset times (B, K) (NaN where unused), previous RR (B, K), beat amplitude (B, K)."""
    b = len(rhythm)
    # Rates keep a small gap to the 60/100 bpm limits so that a 10 s R-peak count agrees with the code.
    hr = np.clip(rng.normal(74.0, 10.0, b), 62.0, 98.0)
    hr = np.where(rhythm == SBRAD, rng.uniform(38.0, 56.0, b), hr)
    hr = np.where(rhythm == STACH, rng.uniform(103.0, 150.0, b), hr)
    hr = np.where(rhythm == AFIB, rng.uniform(55.0, 140.0, b), hr)
    afib = rhythm == AFIB
    rr0 = 60.0 / hr
    k = int(np.ceil((duration_s + 4.0) / _MIN_RR))
    t_nom = np.arange(k) * rr0[:, None]
    f_resp, phi_resp = rng.uniform(0.15, 0.4, b), rng.uniform(0, 2 * np.pi, b)
    # Sinus rhythm: respiratory sinus arrhythmia (weaker at high rates) + Mayer waves + jitter.
    a_rsa = rng.uniform(0.01, 0.06, b) * np.clip(rr0 / 0.8, 0.3, 1.2)
    a_lf, phi_lf = rng.uniform(0.0, 0.02, b), rng.uniform(0, 2 * np.pi, b)
    wobble = (
        a_rsa[:, None] * np.sin(2 * np.pi * f_resp[:, None] * t_nom + phi_resp[:, None])
        + a_lf[:, None] * np.sin(2 * np.pi * 0.1 * t_nom + phi_lf[:, None])
        + 0.008 * rng.standard_normal((b, k))
    )
    rr = rr0[:, None] * (1 + wobble)
    # AF: irregularly irregular, independent lognormal intervals with the same mean.
    cv = rng.uniform(0.08, 0.28, b)[:, None]
    rr_af = rr0[:, None] * np.exp(cv * rng.standard_normal((b, k)) - cv**2 / 2)
    rr = np.where(afib[:, None], rr_af, rr)
    # Premature beats in some sinus records: an early beat, then a compensatory pause (rate unchanged).
    early = (rng.random(b) < 0.12)[:, None] & ~afib[:, None] & (rng.random((b, k)) < 0.08)
    early[:, -1] = False
    lost = np.where(early, rr * rng.uniform(0.25, 0.4, (b, k)), 0.0)
    rr = rr - lost
    rr[:, 1:] += lost[:, :-1]
    rr = np.maximum(rr, _MIN_RR)
    start = -1.0 - rng.uniform(0.0, 1.0, b) * rr0
    beats = start[:, None] + np.concatenate([np.zeros((b, 1)), np.cumsum(rr[:, :-1], axis=1)], axis=1)
    rr_prev = np.concatenate([rr0[:, None], rr[:, :-1]], axis=1)
    beats = np.where((beats >= -1.2) & (beats <= duration_s + 0.6), beats, np.nan)
    beat_amp = 1 + 0.04 * np.sin(2 * np.pi * f_resp[:, None] * beats + phi_resp[:, None]) + 0.01 * rng.standard_normal((b, k))
    return beats, rr_prev, beat_amp, f_resp, phi_resp


def _qrs_and_p(
    rng: np.random.Generator, m: dict[str, np.ndarray], afib: np.ndarray, beats: np.ndarray, beat_amp: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Narrow waves P1, P2, Q, R, S, X: offsets/sigmas/amplitudes (B, K, 6), vectors (B, 6, 3)."""
    b, k = beats.shape
    qs = m["qrs_width"] * np.exp(rng.normal(0.0, 0.03, b))  # per-record drift of the patient's QRS
    gain = m["wave_gain"] * np.exp(rng.normal(0.0, 0.05, (b, 5)))
    scale = m["scale"] * np.exp(rng.normal(0.0, 0.05, b))
    delay, clbbb, lvh = m["rbbb_delay"], m["clbbb"], m["lvh_gain"]

    pr = m["pr"] + rng.normal(0.0, 0.005, b)
    off = np.zeros((b, k, 6))
    off[:, :, 0] = -pr[:, None] + 0.030 + rng.normal(0.0, 0.003, (b, k))
    off[:, :, 1] = off[:, :, 0] + 0.035
    off[:, :, 2:6] = (np.array([0.012, 0.045, 0.078, 0.0]) * qs[:, None])[:, None, :]
    off[:, :, 5] = np.where(clbbb, 0.105, 0.045 * qs + delay)[:, None]  # CRBBB R' / CLBBB notch
    off[:, :, 3] = np.where(clbbb, 0.05, off[:, 0, 3])[:, None]
    sig = np.zeros((b, 6))
    sig[:, 0], sig[:, 1] = 0.020, 0.022
    sig[:, 2:5] = np.array([0.007, 0.011, 0.010]) * qs[:, None]
    sig[:, 3] = np.where(clbbb, 0.02, sig[:, 3] * (1 + 0.12 * (lvh - 1)))
    sig[:, 4] *= 1 + 0.4 * delay / 0.09  # the terminal S broadens with the right-bundle delay
    sig[:, 5] = np.where(clbbb, 0.022, 0.012 + 0.1 * delay)

    # LVH: more voltage and a more leftward-posterior main force.
    r_dir = _R_MAIN + (lvh - 1)[:, None] * [0.12, -0.18, 0.3]
    r_dir /= np.linalg.norm(r_dir, axis=1, keepdims=True)
    vec = np.zeros((b, 6, 3))
    vec[:, 0] = _P_RA * 0.09
    vec[:, 1] = _P_LA * 0.09
    vec[:, 0:2] *= (gain[:, 0] * ~afib)[:, None, None]
    vec[:, 2] = _Q_SEPT * (0.25 * gain[:, 2] * ~clbbb)[:, None]
    vec[:, 3] = np.where(clbbb[:, None], _LB_1 * 1.1, r_dir * 1.4 * lvh[:, None]) * gain[:, 2:3]
    vec[:, 4] = _S_TERM * (0.45 * gain[:, 3] * lvh * ~clbbb)[:, None]
    vec[:, 5] = np.where(clbbb[:, None], _LB_2 * 1.2 * gain[:, 2:3], _R_PRIME * m["r_prime"][:, None])
    vec *= scale[:, None, None]
    vec = np.einsum("bij,bwj->bwi", m["rotation"], vec)
    sigmas = np.broadcast_to(sig[:, None, :], (b, k, 6))
    return off, sigmas, np.broadcast_to(beat_amp[:, :, None], (b, k, 6)), vec


def _st_and_t(
    rng: np.random.Generator, m: dict[str, np.ndarray], st_size: np.ndarray, rr_prev: np.ndarray, beat_amp: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Broad waves T1, T2, ST1..ST3: offsets/sigmas/amplitudes (B, K, 5), vectors (B, 5, 3)."""
    b, k = rr_prev.shape
    delay, clbbb = m["rbbb_delay"], m["clbbb"]
    qtc = m["qtc"] + rng.normal(0.0, 0.005, b)
    t_peak = qtc[:, None] * np.sqrt(rr_prev) - 0.075  # Bazett: QT follows the preceding RR
    stretch = np.clip(np.sqrt(rr_prev), 0.7, 1.25)
    # J point = end of QRS: after the R' in RBBB, after the notch in LBBB.
    rbbb_end = 0.045 * m["qrs_width"] + delay + 2 * (0.012 + 0.1 * delay)
    j_point = np.where(clbbb, 0.15, np.maximum(0.095 * m["qrs_width"], np.where(delay > 0, rbbb_end, 0)))[:, None]
    span = np.maximum(t_peak - j_point, 0.06)
    off = np.stack([t_peak - 0.03 * stretch, t_peak + 0.01 * stretch]
                   + [j_point + span * f for f in (0.1, 0.5, 0.9)], axis=-1)
    sig = np.stack([0.05 * stretch, 0.032 * stretch] + [0.3 * span] * 3, axis=-1)

    t_gain = m["wave_gain"][:, 4] * m["scale"] * np.exp(rng.normal(0.0, 0.05, b))
    t_vec = _T_NORM * 0.35 + (delay / 0.09)[:, None] * [0.03, 0.0, 0.1]  # secondary T change of RBBB
    t_vec = np.where(m["lvh_strain"][:, None], -0.7 * t_vec, t_vec)
    t_vec = np.where(clbbb[:, None], _T_LBBB * 0.45, t_vec) * t_gain[:, None]
    # 1.8 = height of the three-Gaussian plateau per unit amplitude.
    st_vec = (st_size @ np.stack([_ST_DIR[c] for c in ST_CODES]) + m["st_rest"]) / 1.8
    vec = np.stack([t_vec * 0.7, t_vec * 0.5, st_vec, st_vec, st_vec], axis=1)
    vec = np.einsum("bij,bwj->bwi", m["rotation"], vec)
    return off, sig, np.broadcast_to(beat_amp[:, :, None], (b, k, 5)), vec


def _add_waves(
    acc: np.ndarray, off: np.ndarray, sig: np.ndarray, amp: np.ndarray, vec: np.ndarray, beats: np.ndarray, fs: float
) -> None:
    """Add Gaussian waves to `acc` (3, B, padded T): each wave is evaluated on its own ±4σ samples
    only and scattered with bincount, which keeps the cost independent of the record length."""
    _, b, length = acc.shape
    rec, beat = np.nonzero(~np.isnan(beats))
    centres = beats[rec, beat][:, None] + off[rec, beat]  # (M, W)
    s = sig[rec, beat]
    half = int(np.ceil(4 * s.max() * fs)) if s.size else 0
    n = np.rint(centres * fs).astype(np.int64)[..., None] + np.arange(-half, half + 1)  # (M, W, L)
    g = amp[rec, beat][..., None] * np.exp(-0.5 * ((n / fs - centres[..., None]) / s[..., None]) ** 2)
    # Samples that fall outside the padded record pile up on its edge samples, which are cropped.
    flat = (rec[:, None, None] * length + np.clip(n + _pad(fs), 0, length - 1)).ravel()
    for axis in range(3):
        w = (g * vec[rec, :, axis][:, :, None]).ravel()
        acc[axis] += np.bincount(flat, w, minlength=b * length).reshape(b, length)


def _add_f_waves(rng: np.random.Generator, vcg: np.ndarray, afib: np.ndarray, t: np.ndarray) -> None:
    """Fibrillatory waves (4-9 Hz, drifting in frequency and amplitude) on AFIB records."""
    b = len(afib)
    f0 = rng.uniform(4.0, 9.0, b)
    amp = rng.uniform(0.03, 0.12, b)
    drift_f, drift_phase = rng.uniform(0.05, 0.2, b), rng.uniform(0, 2 * np.pi, (b, 3))
    harmonic = rng.uniform(0.1, 0.4, b)
    rows = np.flatnonzero(afib)
    if not rows.size:
        return
    r = rows[:, None]
    freq_dev = 0.6 * np.sin(2 * np.pi * drift_f[r] * t + drift_phase[r, 0])
    phase = 2 * np.pi * (f0[r] * t + np.cumsum(freq_dev, axis=1) * (t[1] - t[0] if len(t) > 1 else 0.0))
    wave = np.sin(phase) + harmonic[r] * np.sin(2 * phase + drift_phase[r, 1])
    wave *= amp[r] * (1 + 0.3 * np.sin(2 * np.pi * 0.2 * t + drift_phase[r, 2]))
    vcg[rows] += _F_WAVE[None, :, None] * wave[:, None, :]


def _electrode_noise(
    rng: np.random.Generator, b: int, t: np.ndarray, fs: float, f_resp: np.ndarray, phi_resp: np.ndarray
) -> np.ndarray:
    """Noise potentials (B, 9, T) at RA, LA, LL, V1..V6 in mV."""
    n_samples = len(t)
    # Smooth components share per-record frequencies; each electrode gets its own amplitude and phase.
    f_drift = rng.uniform(0.05, 0.3, b)
    f_line = rng.choice([50.0, 60.0], b) + rng.uniform(-0.05, 0.05, b)
    basis = np.empty((b, 6, n_samples))
    for j, (f, phi) in enumerate(((f_resp, phi_resp), (f_drift, 0.0), (f_line, 0.0))):
        arg = 2 * np.pi * np.asarray(f)[:, None] * t + np.asarray(phi).reshape(-1, 1)
        basis[:, 2 * j], basis[:, 2 * j + 1] = np.sin(arg), np.cos(arg)
    wander = rng.uniform(0.0, 1.0, b) ** 2  # most records are steady, a few wander a lot
    line = rng.uniform(0.0, 1.0, b) ** 2 * np.where(f_line >= fs / 2, ALIAS_RESIDUE, 1.0)
    size = np.stack([0.06 * wander, 0.15 * wander, 0.02 * line], axis=1)  # (B, 3) mV
    amp = rng.uniform(0.0, 1.0, (b, 9, 3)) * size[:, None, :]
    phase = rng.uniform(0.0, 2 * np.pi, (b, 9, 3))
    coef = np.stack([amp * np.cos(phase), amp * np.sin(phase)], axis=-1).reshape(b, 9, 6)
    noise = np.einsum("bec,bct->bet", coef, basis)
    # Muscle / electrode noise: white, of record-varying size (most records clean).
    em = 0.003 + 0.03 * rng.uniform(0.0, 1.0, b) ** 3
    noise += rng.standard_normal((b, 9, n_samples)) * (em[:, None] * rng.uniform(0.5, 1.5, (b, 9)))[:, :, None]
    # Electrode motion: in some records one electrode jumps and relaxes back (recorder high-pass).
    moved = np.flatnonzero(rng.random(b) < 0.1)
    which = rng.integers(0, 9, b)
    t0, jump, tau = rng.uniform(0.0, t[-1] + 1e-9, b), rng.normal(0.0, 0.4, b), rng.uniform(0.2, 1.0, b)
    if moved.size:
        r = moved[:, None]
        dt = t - t0[r]
        noise[moved, which[moved]] += jump[r] * np.where(dt >= 0, np.exp(-np.maximum(dt, 0) / tau[r]), 0.0)
    return noise
