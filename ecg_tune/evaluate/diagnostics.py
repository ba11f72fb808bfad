"""Warnings a result carries when it is no better than chance or its classifier is degenerate.

A number is only worth publishing when it says what it rests on; these checks catch the classes of
failure behind issue #14 (a head scoring below chance, near-constant scores, collapsed embeddings).
"""

from __future__ import annotations

import math

import numpy as np
import torch

# Mean pairwise cosine similarity of window embeddings above this = collapsed: the windows differ by
# less than 2^-12 of their shared part (1 - cos ~ spread^2 / 2 = 2^-25), so once a head standardises
# the float32 features fewer than 12 of their 24 bits describe what tells windows apart. Not 0.99:
# mean-pooled vit1d features share one large component whatever the input; on the PTB-XL sample they
# sit at 1 - cos = 5e-5 (random init, probe AUC 0.62) and 8.5e-7 (MAE-pretrained, 0.68, the better
# of the two), and the standardising linear head reads both.
COLLAPSE_COSINE = 1 - 2**-25
CONSTANT_SCORE_STD = 1e-4  # median over classes of the record-score spread below this = constant
COSINE_SAMPLE = 512


def chance_warnings(auc: float, ci: tuple[float, float], what: str = "test macro AUC") -> list[str]:
    low, high = ci
    if math.isfinite(high) and high < 0.5:
        return [f"{what} {auc:.3f} is BELOW CHANCE (95% CI [{low:.3f}, {high:.3f}] lies below 0.5)"]
    if math.isfinite(low) and low <= 0.5:
        return [f"{what} {auc:.3f} is not distinguishable from chance (95% CI [{low:.3f}, {high:.3f}] contains 0.5)"]
    if not math.isfinite(low) and auc <= 0.5:
        return [f"{what} {auc:.3f} is no better than chance"]
    if math.isfinite(low) and math.isfinite(high) and not low <= auc <= high:
        # A resample that drops a rare class's only positives scores it 0.5 (docs/differences.md): on
        # a test fold with classes of one or two positives that pulls the whole interval towards 0.5.
        return [f"{what} {auc:.3f} lies outside its bootstrap 95% CI [{low:.3f}, {high:.3f}]: the test fold "
                "has classes with very few positives, whose resamples score 0.5; the CI is not reliable here"]
    return []


def mean_pairwise_cosine(features: torch.Tensor, sample: int = COSINE_SAMPLE, seed: int = 0) -> float:
    """Mean cosine similarity over distinct pairs of (a seeded sample of) feature rows."""
    x = features.detach().double().cpu()  # float64: the collapse threshold lies 3e-8 below 1
    if len(x) > sample:
        idx = torch.from_numpy(np.random.default_rng(seed).choice(len(x), sample, replace=False))
        x = x[idx]
    n = len(x)
    if n < 2:
        return float("nan")
    x = torch.nn.functional.normalize(x, dim=1)
    sim = x @ x.T
    return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))


def degenerate_warnings(scores: np.ndarray, features: torch.Tensor | None) -> list[str]:
    out = []
    spread = np.median(np.asarray(scores, dtype=np.float64).std(axis=0)) if len(scores) > 1 else 0.0
    if spread < CONSTANT_SCORE_STD:
        out.append(f"near-constant scores: the median spread of a class's record scores is {spread:.2g}")
    if features is not None:
        cos = mean_pairwise_cosine(features)
        if math.isfinite(cos) and cos > COLLAPSE_COSINE:
            out.append(f"collapsed embeddings: mean pairwise cosine similarity of windows is 1 - {1 - cos:.1e}")
    return out
