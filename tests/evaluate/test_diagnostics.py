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
