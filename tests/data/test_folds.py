"""Stratified, patient-grouped folds: groups never split, sizes balanced, label prevalence similar."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from ecg_tune.data.folds import assign_folds


def _dataset(seed: int, n: int, n_patients: int, n_labels: int = 20):
    rng = np.random.default_rng(seed)
    prevalence = np.geomspace(0.4, 0.01, n_labels)
    labels = [[f"c{j}" for j in np.nonzero(rng.random(n_labels) < prevalence)[0]] for _ in range(n)]
    patients = [str(p) for p in rng.integers(0, n_patients, n)]
    return labels, patients


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(0, 400), patients_per_record=st.floats(0.2, 1.0))
def test_patients_never_split_and_sizes_balanced(seed, n, patients_per_record):
    labels, patients = _dataset(seed, n, max(1, int(n * patients_per_record)))
    folds = assign_folds(labels, patients, seed=seed)
    assert folds.dtype == np.int8 and len(folds) == n
    assert set(folds.tolist()) <= set(range(1, 11))
    per_patient = pd.Series(folds).groupby(pd.Series(patients)).nunique() if n else pd.Series([], dtype=int)
    assert (per_patient <= 1).all()
    biggest = pd.Series(patients).value_counts().max() if n else 0
    sizes = np.bincount(folds, minlength=11)[1:]
    # Greedy group placement can miss n/10 by at most about one group on each side.
    assert sizes.max() - sizes.min() <= 2 * biggest + 2


def test_label_prevalence_is_similar_across_folds():
    labels, patients = _dataset(1, 5000, 4000)
    folds = assign_folds(labels, patients, seed=0)
    sizes = np.bincount(folds, minlength=11)[1:]
    assert sizes.min() >= 480 and sizes.max() <= 520
    for j in range(20):
        carrying = np.array([f"c{j}" in codes for codes in labels])
        per_fold = np.bincount(folds[carrying], minlength=11)[1:]
        expected = carrying.sum() / 10
        # Iterative stratification keeps every label within a couple of records of its share
        # (random assignment would scatter by ~sqrt(expected)).
        assert np.abs(per_fold - expected).max() <= max(3, 0.1 * expected), (j, per_fold, expected)


def test_deterministic_for_a_seed_and_varies_with_it():
    labels, patients = _dataset(2, 300, 250)
    a = assign_folds(labels, patients, seed=3)
    assert np.array_equal(a, assign_folds(labels, patients, seed=3))
    assert not np.array_equal(a, assign_folds(labels, patients, seed=4))


def test_records_without_patient_are_their_own_group():
    labels = [["a"]] * 20 + [[]] * 20
    folds = assign_folds(labels, [None] * 40)
    assert np.bincount(folds, minlength=11)[1:].tolist() == [4] * 10
    assert np.bincount(folds[:20], minlength=11)[1:].tolist() == [2] * 10


def test_ptbxl_sample_labels_and_patients(ptbxl_root):
    db = pd.read_csv(ptbxl_root / "ptbxl_database.csv")
    labels = [sorted(eval_keys(s)) for s in db.scp_codes]
    patients = [str(int(p)) for p in db.patient_id]
    folds = assign_folds(labels, patients)
    assert pd.Series(folds).groupby(db.patient_id).nunique().max() == 1
    sizes = np.bincount(folds, minlength=11)[1:]
    assert sizes.min() >= 45 and sizes.max() <= 55


def eval_keys(text: str) -> list[str]:
    import ast

    return list(ast.literal_eval(text))
