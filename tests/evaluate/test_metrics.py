"""Macro AUC (paper rule for undefined classes), bootstrap CI and window aggregation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import roc_auc_score

from ecg_tune.evaluate.metrics import aggregate_windows, bootstrap_ci, bootstrap_values, macro_auc


def _pairwise_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Independent definition: P(score of a positive > score of a negative) + P(tie)/2."""
    pos, neg = s[y == 1], s[y == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def test_equals_sklearn_macro_when_every_class_is_defined() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((300, 7)) < 0.3).astype(np.float32)
    y[0], y[1] = 1, 0  # every class has both outcomes
    s = rng.normal(size=(300, 7)) + y * np.linspace(0, 2, 7)
    macro, per_class = macro_auc(y, s)
    assert macro == pytest.approx(roc_auc_score(y, s, average="macro"), abs=1e-12)
    for c in range(7):
        assert per_class[c] == pytest.approx(roc_auc_score(y[:, c], s[:, c]), abs=1e-12)


def test_undefined_class_counts_one_half() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random((50, 3)) < 0.5).astype(int)
    y[:, 1] = 0  # no positive
    y[:, 2] = 1  # no negative
    y[0, 0], y[1, 0] = 1, 0
    s = rng.random((50, 3))
    macro, per_class = macro_auc(y, s)
    assert per_class[1] == 0.5 and per_class[2] == 0.5
    assert per_class[0] == pytest.approx(roc_auc_score(y[:, 0], s[:, 0]))
    assert macro == pytest.approx((per_class[0] + 1.0) / 3)


def test_perfect_and_reversed_and_constant_scores() -> None:
    y = np.array([[0], [0], [1], [1]])
    assert macro_auc(y, np.array([[0.1], [0.2], [0.3], [0.4]]))[0] == 1.0
    assert macro_auc(y, np.array([[0.4], [0.3], [0.2], [0.1]]))[0] == 0.0
    assert macro_auc(y, np.zeros((4, 1)))[0] == 0.5  # all tied


def test_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError):
        macro_auc(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError):
        macro_auc(np.array([[0], [2]]), np.zeros((2, 1)))
    with pytest.raises(ValueError):
        macro_auc(np.array([[0], [1]]), np.array([[0.0], [np.nan]]))


@settings(max_examples=60, deadline=None)
@given(
    st.integers(2, 40).flatmap(
        lambda n: st.tuples(
            arrays(np.int8, (n, 3), elements=st.integers(0, 1)),
            # few distinct values, so ties are frequent
            arrays(np.float64, (n, 3), elements=st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0])),
        )
    )
)
def test_rank_formula_matches_pairwise_definition_with_ties(data: tuple[np.ndarray, np.ndarray]) -> None:
    y, s = data
    macro, per_class = macro_auc(y, s)
    expected = []
    for c in range(y.shape[1]):
        if 0 < y[:, c].sum() < len(y):
            expected.append(_pairwise_auc(y[:, c], s[:, c]))
            assert per_class[c] == pytest.approx(roc_auc_score(y[:, c], s[:, c]), abs=1e-12)
        else:
            expected.append(0.5)
    assert per_class == pytest.approx(expected, abs=1e-12)
    assert macro == pytest.approx(np.mean(expected), abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.integers(3, 30), st.integers(0, 10_000))
def test_fast_bootstrap_equals_resampling_and_ranking(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 4)) < 0.3).astype(int)
    s = np.round(rng.random((n, 4)), 1)  # ties
    values = bootstrap_values(y, s, 17, seed, chunk=5)
    draw = np.random.default_rng(seed)
    for v in values:
        rows = draw.integers(0, n, size=n)
        assert v == pytest.approx(macro_auc(y[rows], s[rows])[0], abs=1e-12)


def test_bootstrap_ci_brackets_the_estimate_and_is_seeded() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random((400, 5)) < 0.2).astype(int)
    s = rng.normal(size=(400, 5)) + y
    point = macro_auc(y, s)[0]
    low, high = bootstrap_ci(y, s, n_resamples=300, seed=7)
    assert low < point < high
    assert high - low < 0.15
    assert bootstrap_ci(y, s, n_resamples=300, seed=7) == (low, high)
    assert np.isnan(bootstrap_ci(y, s, n_resamples=0)[0])


def test_aggregate_mean_and_max_by_hand() -> None:
    scores = np.array([[0.1, 0.9], [0.3, 0.5], [0.8, 0.2], [0.4, 0.4], [0.0, 1.0]])
    pos = np.array([0, 0, 2, 1, 2])
    mean = aggregate_windows(scores, pos, 3, "mean")
    np.testing.assert_allclose(mean, [[0.2, 0.7], [0.4, 0.4], [0.4, 0.6]])
    top = aggregate_windows(scores, pos, 3, "max")
    np.testing.assert_allclose(top, [[0.3, 0.9], [0.4, 0.4], [0.8, 1.0]])


def test_aggregate_rejects_uncovered_records_and_unknown_mode() -> None:
    with pytest.raises(ValueError, match="without any window"):
        aggregate_windows(np.zeros((2, 1)), np.array([0, 0]), 2)
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate_windows(np.zeros((2, 1)), np.array([0, 1]), 2, "median")


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.integers(0, 1000))
def test_aggregate_matches_groupby(n_records: int, per_record: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pos = np.repeat(np.arange(n_records), rng.integers(1, per_record + 1, size=n_records))
    rng.shuffle(pos)
    scores = rng.random((len(pos), 3))
    mean = aggregate_windows(scores, pos, n_records, "mean")
    top = aggregate_windows(scores, pos, n_records, "max")
    for r in range(n_records):
        np.testing.assert_allclose(mean[r], scores[pos == r].mean(axis=0))
        np.testing.assert_allclose(top[r], scores[pos == r].max(axis=0))


# --- AUPRC, present classes (issue #14 item 6) -------------------------------------------------------


def _average_precision_by_hand(y: np.ndarray, s: np.ndarray) -> float:
    """AP = mean over positives of the precision at that positive's rank (distinct scores)."""
    order = np.argsort(-s)
    hits = y[order].astype(bool)
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision_at[hits].mean())


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 10_000))
def test_auprc_matches_the_textbook_formula_and_skips_classes_without_positives(seed: int) -> None:
    from ecg_tune.evaluate.metrics import macro_summary, per_class_auprc

    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 40))
    y = (rng.random((n, 3)) < 0.3).astype(np.int8)
    y[:, 2] = 0  # a class absent from the scored set
    y[0, 0] = 1
    s = rng.permutation(n * 3).reshape(n, 3).astype(float)  # distinct scores
    ap = per_class_auprc(y, s)
    assert np.isnan(ap[2])
    for c in (0, 1):
        if y[:, c].any():
            assert ap[c] == pytest.approx(_average_precision_by_hand(y[:, c], s[:, c]))
    summary = macro_summary(y, s)
    present = [c for c in range(3) if 0 < y[:, c].sum() < n]
    aucs = [float(np.mean([[si > sj for sj in s[y[:, c] == 0, c]] for si in s[y[:, c] == 1, c]])) for c in present]
    assert summary["n_present"] == len(present)
    assert summary["auc_present"] == pytest.approx(np.mean(aucs))
    assert summary["auc"] == pytest.approx((sum(aucs) + 0.5 * (3 - len(present))) / 3)
