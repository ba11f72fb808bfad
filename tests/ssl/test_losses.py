"""Each loss against an independent, straightforward implementation (Python loops or numpy, float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ecg_tune.ssl.losses import (
    byol_loss,
    cpc_infonce,
    cpc_negative_indices,
    nt_xent,
    nt_xent_logits,
    sinkhorn,
    swav_loss,
)


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


# ------------------------------------------------------------------------------------------- NT-Xent


def nt_xent_loop(z1: np.ndarray, z2: np.ndarray, temperature: float) -> float:
    """Textbook NT-Xent: for anchor i among the 2B views, -log exp(s_ip/t) / sum_{j != i} exp(s_ij/t)."""
    z = _unit(np.concatenate([z1, z2]).astype(np.float64))
    n2 = len(z)
    b = n2 // 2
    total = 0.0
    for i in range(n2):
        positive = (i + b) % n2
        denominator = sum(math.exp(z[i] @ z[j] / temperature) for j in range(n2) if j != i)
        total += -math.log(math.exp(z[i] @ z[positive] / temperature) / denominator)
    return total / n2


def nt_xent_reference_bug(z1: np.ndarray, z2: np.ndarray, temperature: float) -> float:
    """The reference's formula (paper notes 8.3): all 2B similarities summed, then e subtracted."""
    z = _unit(np.concatenate([z1, z2]).astype(np.float64))
    n2 = len(z)
    b = n2 // 2
    sim = np.exp(z @ z.T / temperature)
    denominator = sim.sum(axis=1) - math.e
    positive = np.array([sim[i, (i + b) % n2] for i in range(n2)])
    return float(np.mean(-np.log(positive / denominator)))


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 7),
    d=st.integers(2, 9),
    temperature=st.floats(0.1, 2.0),
    seed=st.integers(0, 2**16),
)
def test_nt_xent_matches_loop(b: int, d: int, temperature: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    z1, z2 = rng.normal(size=(b, d)), rng.normal(size=(b, d))
    got = nt_xent(torch.tensor(z1, dtype=torch.float32), torch.tensor(z2, dtype=torch.float32), temperature)
    assert got.item() == pytest.approx(nt_xent_loop(z1, z2, temperature), rel=1e-4, abs=1e-4)


def test_nt_xent_excludes_self_similarity_unlike_reference() -> None:
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(8, 16)), rng.normal(size=(8, 16))
    got = nt_xent(torch.tensor(z1), torch.tensor(z2), 0.5).item()
    correct, buggy = nt_xent_loop(z1, z2, 0.5), nt_xent_reference_bug(z1, z2, 0.5)
    assert got == pytest.approx(correct, rel=1e-6)
    # The reference keeps exp(1/0.5) - e ~ 4.67 in every denominator: a clearly different loss.
    assert buggy - correct > 0.05
    logits, _ = nt_xent_logits(torch.tensor(z1), torch.tensor(z2), 0.5)
    assert torch.isneginf(logits.diagonal()).all()
    assert torch.isfinite(logits).sum() == 16 * 15


def test_nt_xent_targets_point_to_the_other_view_and_accuracy_is_perfect_for_identical_views() -> None:
    z = torch.eye(5)
    logits, targets = nt_xent_logits(z, z.clone(), 0.5)
    assert targets.tolist() == [5, 6, 7, 8, 9, 0, 1, 2, 3, 4]
    assert (logits.argmax(1) == targets).all()


def test_nt_xent_normalises_and_is_float32_under_half_inputs() -> None:
    z1, z2 = torch.randn(4, 3), torch.randn(4, 3)
    a = nt_xent(z1, z2)
    assert nt_xent(3 * z1, 0.5 * z2).item() == pytest.approx(a.item(), rel=1e-5)
    assert nt_xent(z1.bfloat16(), z2.bfloat16()).dtype == torch.float32


def test_similarities_stay_float32_under_autocast() -> None:
    z1, z2 = torch.randn(6, 5), torch.randn(6, 5)
    pred, z = torch.randn(2, 7, 4), torch.randn(2, 7, 4)
    _, neg_time = cpc_negative_indices(2, 7, 2, 3, "same_sequence")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, _ = nt_xent_logits(z1, z2)
        cpc, _ = cpc_infonce(pred, z, 2, neg_time)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, nt_xent_logits(z1, z2)[0])
    torch.testing.assert_close(cpc, cpc_infonce(pred, z, 2, neg_time)[0])


# --------------------------------------------------------------------------------------------- BYOL


def test_byol_loss_matches_numpy() -> None:
    rng = np.random.default_rng(1)
    p, z = rng.normal(size=(10, 6)), rng.normal(size=(10, 6))
    expected = np.mean(2 - 2 * np.sum(_unit(p) * _unit(z), axis=1))
    assert byol_loss(torch.tensor(p), torch.tensor(z)).item() == pytest.approx(expected, rel=1e-6)
    assert byol_loss(torch.tensor(p), torch.tensor(p)).item() == pytest.approx(0.0, abs=1e-6)
    assert byol_loss(torch.tensor(p), -torch.tensor(p)).item() == pytest.approx(4.0, abs=1e-6)


# ------------------------------------------------------------------------------------------- Sinkhorn


def sinkhorn_numpy(scores: np.ndarray, epsilon: float, iterations: int) -> np.ndarray:
    """SwAV's algorithm as written in its paper's pseudo-code, float64, no max subtraction."""
    q = np.exp(scores.astype(np.float64) / epsilon).T  # (K, B)
    k, b = q.shape
    q /= q.sum()
    for _ in range(iterations):
        q /= q.sum(axis=1, keepdims=True)
        q /= k
        q /= q.sum(axis=0, keepdims=True)
        q /= b
    return (q * b).T


@pytest.mark.parametrize("iterations", [1, 3, 10])
def test_sinkhorn_matches_numpy(iterations: int) -> None:
    rng = np.random.default_rng(2)
    scores = np.tanh(rng.normal(size=(12, 7)))  # cosine-like values in (-1, 1)
    got = sinkhorn(torch.tensor(scores, dtype=torch.float32), 0.05, iterations).double().numpy()
    np.testing.assert_allclose(got, sinkhorn_numpy(scores, 0.05, iterations), rtol=1e-4, atol=1e-6)


def test_sinkhorn_marginals() -> None:
    rng = np.random.default_rng(3)
    b, k = 16, 4
    scores = torch.tensor(np.tanh(rng.normal(size=(b, k))), dtype=torch.float32)
    q = sinkhorn(scores, epsilon=0.5, iterations=3)
    # Each sample's codes are a distribution (the last step normalises samples exactly).
    torch.testing.assert_close(q.sum(dim=1), torch.ones(b))
    # With enough iterations the prototypes share the batch equally: B/K each.
    q = sinkhorn(scores, epsilon=0.5, iterations=200)
    torch.testing.assert_close(q.sum(dim=0), torch.full((k,), b / k), rtol=1e-4, atol=1e-4)


def test_sinkhorn_is_shift_invariant_and_finite_for_large_scores() -> None:
    scores = torch.rand(8, 5)
    torch.testing.assert_close(sinkhorn(scores + 30.0), sinkhorn(scores))
    assert torch.isfinite(sinkhorn(scores * 100.0)).all()


# ----------------------------------------------------------------------------------------------- SwAV


def swav_loss_loop(scores: list[np.ndarray], codes: dict[int, np.ndarray], temperature: float) -> float:
    n_views = len(scores)
    per_assigned = []
    for view, q in codes.items():
        total = 0.0
        for other in range(n_views):
            if other == view:
                continue
            for i in range(q.shape[0]):
                logits = scores[other][i] / temperature
                log_norm = math.log(sum(math.exp(v) for v in logits))
                total += -sum(q[i, j] * (logits[j] - log_norm) for j in range(q.shape[1])) / q.shape[0]
        per_assigned.append(total / (n_views - 1))
    return sum(per_assigned) / len(per_assigned)


def test_swav_loss_matches_loop() -> None:
    rng = np.random.default_rng(4)
    n_views, b, k = 4, 5, 6
    scores = [np.tanh(rng.normal(size=(b, k))) for _ in range(n_views)]
    codes = {0: rng.dirichlet(np.ones(k), size=b), 2: rng.dirichlet(np.ones(k), size=b)}
    got = swav_loss([torch.tensor(s) for s in scores], {v: torch.tensor(q) for v, q in codes.items()}, 0.1)
    assert got.item() == pytest.approx(swav_loss_loop(scores, codes, 0.1), rel=1e-5)


# ------------------------------------------------------------------------------------------------ CPC


def cpc_loop(pred: np.ndarray, z: np.ndarray, k: int, neg_time: np.ndarray, neg_batch: np.ndarray | None):
    b, t, _ = z.shape
    losses, correct = [], []
    for i in range(b):
        for s in range(t - k):
            logits = [pred[i, s] @ z[i, s + k]]
            for n in range(neg_time.shape[2]):
                src = i if neg_batch is None else neg_batch[i, s, n]
                logits.append(pred[i, s] @ z[src, neg_time[i, s, n]])
            m = max(logits)
            log_norm = m + math.log(sum(math.exp(v - m) for v in logits))
            losses.append(log_norm - logits[0])
            correct.append(logits[0] > max(logits[1:]))
    return float(np.mean(losses)), float(np.mean(correct))


@pytest.mark.parametrize("mode", ["same_sequence", "batch"])
def test_cpc_infonce_matches_loop(mode: str) -> None:
    rng = np.random.default_rng(5)
    b, t, d, k, n = 3, 9, 4, 2, 5
    pred, z = rng.normal(size=(b, t, d)), rng.normal(size=(b, t, d))
    neg_batch, neg_time = cpc_negative_indices(b, t, k, n, mode, generator=torch.Generator().manual_seed(0))
    loss, accuracy = cpc_infonce(torch.tensor(pred), torch.tensor(z), k, neg_time, neg_batch)
    expected_loss, expected_accuracy = cpc_loop(
        pred, z, k, neg_time.numpy(), None if neg_batch is None else neg_batch.numpy()
    )
    assert loss.item() == pytest.approx(expected_loss, rel=1e-6)
    assert accuracy.item() == pytest.approx(expected_accuracy)


def test_cpc_negatives_exclude_the_positive_and_cover_all_other_candidates() -> None:
    gen = torch.Generator().manual_seed(1)
    b, t, k, n = 4, 6, 2, 400
    _, neg_time = cpc_negative_indices(b, t, k, n, "same_sequence", generator=gen)
    assert neg_time.shape == (b, t - k, n)
    for s in range(t - k):
        drawn = set(neg_time[:, s].flatten().tolist())
        assert drawn == set(range(t)) - {s + k}
    neg_batch, neg_time = cpc_negative_indices(b, t, k, n, "batch", generator=gen)
    assert neg_batch is not None
    for i in range(b):
        assert set(neg_batch[i].flatten().tolist()) == set(range(b)) - {i}
    assert set(neg_time.flatten().tolist()) == set(range(t))


def test_cpc_negatives_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="more than 5"):
        cpc_negative_indices(2, 5, 5, 3, "same_sequence")
    with pytest.raises(ValueError, match="at least two sequences"):
        cpc_negative_indices(1, 5, 1, 3, "batch")
    with pytest.raises(ValueError, match="unknown"):
        cpc_negative_indices(2, 5, 1, 3, "elsewhere")
