"""The paired bootstrap and Holm correction of the report (issue #14 item 6), checked against
sklearn on explicitly resampled data, a tiny example worked by hand, and Holm written out here."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from ecg_tune.tune.report.paired import class_aucs, holm, paired_bootstrap, resample_indices


def sklearn_macro_present(scores: np.ndarray, targets: np.ndarray) -> float:
    """Macro ROC-AUC over the classes with both a positive and a negative (sklearn per class)."""
    aucs = [roc_auc_score(targets[:, c], scores[:, c]) for c in range(targets.shape[1])
            if 0 < targets[:, c].sum() < len(targets)]
    return float(np.mean(aucs)) if aucs else math.nan


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 25), st.integers(1, 4))
def test_class_aucs_equal_sklearn_on_the_resampled_records(seed: int, n: int, n_classes: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, size=(n, n_classes)) / 4.0  # many ties
    targets = (rng.random((n, n_classes)) < 0.4).astype(np.uint8)
    idx = rng.integers(0, n, size=(5, n))
    weights = np.stack([np.bincount(r, minlength=n) for r in idx]).astype(float)
    got = class_aucs(scores, targets, weights)
    for b in range(5):
        for c in range(n_classes):
            y, s = targets[idx[b], c], scores[idx[b], c]
            if 0 < y.sum() < n:
                assert got[b, c] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
            else:
                assert math.isnan(got[b, c])


def test_sorted_path_for_large_classes_equals_sklearn(monkeypatch: pytest.MonkeyPatch) -> None:
    import ecg_tune.tune.report.paired as paired

    monkeypatch.setattr(paired, "_MATRIX_LIMIT", 0)  # every class through the sort-and-cumsum path
    rng = np.random.default_rng(7)
    scores = rng.integers(0, 6, size=(50, 3)) / 6.0
    targets = (rng.random((50, 3)) < 0.5).astype(np.uint8)
    idx = rng.integers(0, 50, size=(4, 50))
    got = paired.class_aucs(scores, targets, np.stack([np.bincount(r, minlength=50) for r in idx]).astype(float))
    for b in range(4):
        for c in range(3):
            assert got[b, c] == pytest.approx(roc_auc_score(targets[idx[b], c], scores[idx[b], c]), abs=1e-12)


def test_tiny_paired_bootstrap_by_hand() -> None:
    targets = np.array([[1], [0], [1], [0]], dtype=np.uint8)
    a = np.array([[0.9], [0.1], [0.8], [0.2]])  # AUC 1
    b = np.array([[0.1], [0.9], [0.8], [0.2]])  # positives {0.1, 0.8} vs negatives {0.9, 0.2}: 1 of 4 pairs
    indices = np.array([[0, 1, 2, 3],   # diff 1 - 0.25 = 0.75
                        [0, 0, 1, 1],   # a: 0.9 > 0.1 → 1; b: 0.1 < 0.9 → 0; diff 1
                        [2, 3, 3, 2],   # both 0.8 > 0.2 → 1; diff 0
                        [1, 1, 3, 3]])  # no positive: left out
    res = paired_bootstrap([(a, b)], targets, indices)
    assert res.diff == pytest.approx(0.75)
    boot = [0.75, 1.0, 0.0]
    mean = sum(boot) / 3
    se = math.sqrt(sum((x - mean) ** 2 for x in boot) / 2)
    assert res.se == pytest.approx(se)
    assert res.p_value == pytest.approx(math.erfc(0.75 / se / math.sqrt(2)))
    assert (res.low, res.high) == (pytest.approx(0.75 - 1.959963985 * se), pytest.approx(0.75 + 1.959963985 * se))
    assert (res.n_pairs, res.n_records, res.n_classes) == (1, 4, 1)


def test_seeds_are_pooled_as_the_mean_of_paired_differences_on_shared_resamples() -> None:
    rng = np.random.default_rng(5)
    n, c = 40, 3
    targets = (rng.random((n, c)) < 0.3).astype(np.uint8)
    targets[:, 2] = 0  # an absent class: left out of both macros
    pairs = [(targets + rng.normal(0, s, (n, c)), targets + rng.normal(0, 1.0, (n, c))) for s in (0.5, 0.8)]
    indices = resample_indices(n, 50, seed=3)
    res = paired_bootstrap(pairs, targets, indices)
    expected = np.mean([sklearn_macro_present(x, targets) - sklearn_macro_present(y, targets) for x, y in pairs])
    assert res.diff == pytest.approx(expected, abs=1e-12) and res.n_classes == 2
    boot = []
    for r in indices:
        t = targets[r]
        boot.append(np.mean([sklearn_macro_present(x[r], t) - sklearn_macro_present(y[r], t) for x, y in pairs]))
    boot = np.array(boot)
    boot = boot[np.isfinite(boot)]
    assert res.se == pytest.approx(boot.std(ddof=1), rel=1e-9)
    assert np.array_equal(indices, np.random.default_rng(3).integers(0, n, size=(50, n)))


def test_identical_arms_are_not_different() -> None:
    rng = np.random.default_rng(0)
    targets = (rng.random((30, 2)) < 0.5).astype(np.uint8)
    s = rng.random((30, 2))
    res = paired_bootstrap([(s, s.copy())], targets, resample_indices(30, 20))
    assert res.diff == 0.0 and res.p_value == 1.0


def hand_holm(p: list[float]) -> list[float]:
    """Textbook Holm: sort ascending; adjusted p_(i) = max over j ≤ i of min(1, (m − j + 1) p_(j))."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adjusted = [0.0] * m
    for i in range(m):
        adjusted[order[i]] = max(min(1.0, (m - j) * p[order[j]]) for j in range(i + 1))
    return adjusted


def test_holm_worked_example() -> None:
    # sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → max(0.06, 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = holm([0.2, math.nan, 0.01])  # NaN: not tested, not counted in m
    assert math.isnan(out[1]) and out[0] == pytest.approx(0.2) and out[2] == pytest.approx(0.02)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=12))
def test_holm_equals_the_textbook_definition(p: list[float]) -> None:
    assert holm(p) == pytest.approx(hand_holm(p), abs=1e-12)
