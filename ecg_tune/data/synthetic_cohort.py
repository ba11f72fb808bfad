"""The synthetic cohort: patients, their hearts, the labels a reader writes and the folds."""

from __future__ import annotations

import numpy as np

from ecg_tune.data.folds import stratified_group_folds
from ecg_tune.data.synthetic_model import (
    _EARLY_REPOL,
    _L,
    _ST_DIR,
    AFIB,
    LABELS,
    MISSED_CODE_RATE,
    N_FOLDS,
    SBRAD,
    SINUS,
    ST_CODES,
    STACH,
    Cohort,
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
