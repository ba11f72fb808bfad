"""The synthetic ECG model's constants: label codes and superclasses, wave directions, the Dower
transform and electrode wiring, and the `Cohort` a dataset is drawn from (see `synthetic.py`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
