"""Warnings that a result is no better than chance or rests on a degenerate classifier (issue #14)."""

from __future__ import annotations

import math

import numpy as np
import torch

from ecg_tune.evaluate.diagnostics import chance_warnings, degenerate_warnings, mean_pairwise_cosine


def test_chance_warnings() -> None:
    assert "BELOW CHANCE" in chance_warnings(0.45, (0.36, 0.49))[0]
    assert "not distinguishable" in chance_warnings(0.55, (0.48, 0.62))[0]
    assert chance_warnings(0.80, (0.73, 0.88)) == []
    assert "no better than chance" in chance_warnings(0.5, (math.nan, math.nan))[0]
    assert "outside its bootstrap 95% CI" in chance_warnings(0.908, (0.683, 0.888))[0]


def test_a_point_estimate_outside_its_ci_is_flagged_on_a_real_bootstrap() -> None:
    """Classes with one positive among 29 records score 0.5 in every resample that misses it, so the
    interval of a well-separated result sits below the point estimate, and the result says so."""
    from ecg_tune.evaluate.metrics import bootstrap_ci, macro_auc

    rng = np.random.default_rng(0)
    y = np.zeros((29, 12), dtype=np.int8)
    for c in range(12):
        y[c, c] = 1  # one positive per class
    scores = y + 0.05 * rng.random(y.shape)  # every positive ranked first: AUC 1 per class
    auc, _ = macro_auc(y, scores)
    low, high = bootstrap_ci(y, scores, n_resamples=300, seed=0)
    # By hand: a class keeps AUC 1 when its positive is drawn (prob 1 - (28/29)^29 ~ 0.64), else 0.5;
    # all twelve are drawn in 0.64^12 ~ 0.5 % of resamples, so the 97.5 % quantile lies below 1.
    assert auc == 1.0 and high < 1.0
    assert "outside its bootstrap 95% CI" in chance_warnings(auc, (low, high))[0]


def test_mean_pairwise_cosine_by_hand() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    c = 1 / math.sqrt(2)
    assert abs(mean_pairwise_cosine(x) - (0 + c + c) / 3) < 1e-6


def test_collapsed_embeddings_and_constant_scores_are_flagged() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random((50, 4))
    healthy = torch.from_numpy(rng.standard_normal((100, 16)))
    assert degenerate_warnings(scores, healthy) == []
    collapsed = torch.ones(100, 16) + 1e-4 * healthy
    assert any("collapsed embeddings" in w for w in degenerate_warnings(scores, collapsed))
    assert any("near-constant" in w for w in degenerate_warnings(np.full((50, 4), 0.3), healthy))


def test_a_shared_component_with_informative_spread_is_not_collapse() -> None:
    """Features as vit1d's pooled ones on the PTB-XL sample: one large component common to every window
    plus a varying part 0.08 % of its size (mean cosine 1 - 9e-7, as MAE's), which a standardising
    linear head reads well: not flagged. With 13x less spread (1 - 5e-9) it is."""
    rng = np.random.default_rng(1)
    shared = torch.from_numpy(rng.standard_normal(96)) * 10
    varying = torch.from_numpy(rng.standard_normal((64, 96)))
    scores = rng.random((50, 4))
    assert degenerate_warnings(scores, shared + 8e-3 * varying) == []
    assert any("collapsed embeddings" in w for w in degenerate_warnings(scores, shared + 6e-4 * varying))
