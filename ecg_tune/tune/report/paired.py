"""Paired comparison of ablation cells with the baseline on the same test records, Holm-corrected.

Why paired, and how seeds are combined
--------------------------------------
Every cell is evaluated on the same test fold, so the two arms of a comparison score the same
records; most of the sampling noise of a macro AUC (which records happen to be in the test fold,
how many rare positives) is shared by both arms and cancels in their difference. An unpaired test
(Welch over seeds, in the ablation table) ignores that and is far less sensitive; it also has one
value per seed and so nothing to work with for a single-seed cell.

The statistic is Δ = cell − baseline of the macro ROC-AUC over the classes present in the test fold
(at least one positive and one negative; absent classes count 0.5 in both arms under the paper's
convention and cancel). Seeds are paired by their `seed` value (same data order and initialisation
seed); Δ is the MEAN over seed pairs of the per-seed differences ("pooled"). Its sampling
distribution comes from a paired bootstrap over test records: one matrix of resample indices
(records drawn with replacement, `BOOT_SEED`) is used for BOTH arms and for EVERY seed pair, so each
bootstrap replicate is the seed-mean difference on one resampled test set; within a replicate the
macro is over the classes present in that resample (the same for both arms: the targets are the
same records'). The p-value and CI use the bootstrap standard error with a normal approximation,
p = 2 Φ(−|Δ| / SE), CI = Δ ± 1.96 SE (continuous p-values for the Holm step-down, and a CI that
excludes 0 exactly when the unadjusted p < 0.05). This quantifies test-set sampling uncertainty
for these trained models; the spread over training seeds is what the ablation table's t-intervals
show. Pooling seeds in one resample (rather than a test per seed) gives one decision per cell.

Multiplicity: every paired comparison in the report (all cells × protocols) is one family; p-values
are Holm-adjusted across it and a difference is called significant when its adjusted p < 0.05.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ecg_tune.tune.report.data import SweepRecord, scalar_protocols
from ecg_tune.tune.report.tables import Group, groups

ALPHA = 0.05
N_BOOT = 1000
BOOT_SEED = 0
_Z = float(stats.norm.ppf(0.975))


# ---------------------------------------------------------------- numerics
def resample_indices(n: int, n_boot: int, seed: int = BOOT_SEED) -> np.ndarray:
    """(n_boot, n) record indices drawn with replacement: `default_rng(seed).integers(0, n, (n_boot, n))`."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _counts(indices: np.ndarray, n: int) -> np.ndarray:
    return np.stack([np.bincount(row, minlength=n) for row in indices]).astype(np.float64)


_MATRIX_LIMIT = 4_000_000  # positives × negatives of a class up to which the pairwise (BLAS) path is used


def class_aucs(scores: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC-AUC of every class under each row of record weights (bootstrap multiplicities).

    scores, targets: (n, C); weights: (B, n). Returns (B, C), NaN where a class has no positive or no
    negative weight. AUC = P(score of a positive > score of a negative) + ½ P(tie) under the weights:
    for a class with few positives (most of PTB-XL's 71), one matrix product with the pairwise
    comparison matrix of its positives and negatives; otherwise by sorting the class once and summing
    the weights of lower-scored negatives per tied score group.
    """
    n_classes = scores.shape[1]
    out = np.full((weights.shape[0], n_classes), np.nan)
    wt = np.ascontiguousarray(weights.T, dtype=np.float64)  # (n, B): gathering records copies whole rows
    for c in range(n_classes):
        y = targets[:, c].astype(bool)
        pos_idx, neg_idx = np.flatnonzero(y), np.flatnonzero(~y)
        if len(pos_idx) == 0 or len(neg_idx) == 0:
            continue
        if len(pos_idx) * len(neg_idx) <= _MATRIX_LIMIT:
            sp, sn = scores[pos_idx, c][:, None], scores[neg_idx, c][None, :]
            pairs = (sp > sn).astype(np.float64) + 0.5 * (sp == sn)  # (P, N)
            wp, wn = wt[pos_idx], wt[neg_idx]
            num = ((pairs.T @ wp) * wn).sum(axis=0)
            p_total, n_total = wp.sum(axis=0), wn.sum(axis=0)
        else:
            order = np.argsort(scores[:, c], kind="mergesort")
            s, ys = scores[order, c], y[order]
            w = wt[order]
            starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # first index of each tied score group
            pos = np.add.reduceat(w * ys[:, None], starts, axis=0)
            neg = np.add.reduceat(w * ~ys[:, None], starts, axis=0)
            below = np.cumsum(neg, axis=0) - neg
            num = (pos * (below + 0.5 * neg)).sum(axis=0)
            p_total, n_total = pos.sum(axis=0), neg.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = num / (p_total * n_total)
        out[:, c] = np.where((p_total > 0) & (n_total > 0), auc, np.nan)
    return out


def macro_present(aucs: np.ndarray) -> np.ndarray:
    """Row-wise mean over the classes with a defined AUC (NaN when none is)."""
    ok = ~np.isnan(aucs)
    count = ok.sum(axis=1)
    total = np.where(ok, aucs, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


@dataclass
class Paired:
    diff: float  # mean over seed pairs of macro AUC(a) − macro AUC(b), classes present in the test fold
    se: float  # bootstrap standard error of diff
    low: float
    high: float
    p_value: float  # two-sided, normal approximation with the bootstrap SE (unadjusted)
    n_pairs: int
    n_records: int
    n_classes: int  # classes present in the test fold


def paired_bootstrap(pairs: Sequence[tuple[np.ndarray, np.ndarray]], targets: np.ndarray,
                     indices: np.ndarray) -> Paired:
    """Δ = mean over pairs of macro AUC(a) − macro AUC(b) on the same records, with its paired bootstrap.

    `pairs`: (scores of arm a, scores of arm b), each (n, C), rows aligned with `targets` (n, C);
    `indices`: (B, n) resample indices shared by both arms and all pairs (see `resample_indices`).
    """
    n = targets.shape[0]
    present = (targets.sum(axis=0) > 0) & (targets.sum(axis=0) < n)
    full = np.ones((1, n))
    weights = _counts(indices, n)
    diffs, boots = [], []
    for a, b in pairs:
        diffs.append(float(macro_present(class_aucs(a, targets, full))[0] - macro_present(class_aucs(b, targets, full))[0]))
        boots.append(macro_present(class_aucs(a, targets, weights)) - macro_present(class_aucs(b, targets, weights)))
    diff = float(np.mean(diffs))
    boot = np.mean(np.stack(boots), axis=0)
    boot = boot[np.isfinite(boot)]
    se = float(boot.std(ddof=1)) if len(boot) > 1 else math.nan
    if not math.isfinite(se) or se == 0.0:
        p = math.nan if not math.isfinite(se) else (1.0 if diff == 0 else 0.0)
        return Paired(diff, se, diff, diff, p, len(pairs), n, int(present.sum()))
    p = float(2 * stats.norm.sf(abs(diff) / se))
    return Paired(diff, se, diff - _Z * se, diff + _Z * se, p, len(pairs), n, int(present.sum()))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values; NaN entries are not part of the family and stay NaN."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(len(p), np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    running = 0.0
    for rank, i in enumerate(idx[np.argsort(p[idx], kind="mergesort")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


# ---------------------------------------------------------------- the report's table
def _align(arrays: list[dict[str, Any]]) -> tuple[list[np.ndarray], np.ndarray, list[str]] | str:
    """Scores of every npz on the records and classes all share (sorted record ids, the first's class
    order), and the common targets; or the reason they cannot be compared."""
    common = set(arrays[0]["record_ids"].astype(str))
    for a in arrays[1:]:
        common &= set(a["record_ids"].astype(str))
    codes = [str(c) for c in arrays[0]["codes"]]
    for a in arrays[1:]:
        have = {str(c) for c in a["codes"]}
        codes = [c for c in codes if c in have]
    if not common or not codes:
        return "no common test records or classes"
    ids = sorted(common)
    aligned, targets = [], None
    for a in arrays:
        rows = {r: i for i, r in enumerate(a["record_ids"].astype(str))}
        cols = {str(c): j for j, c in enumerate(a["codes"])}
        r, c = [rows[i] for i in ids], [cols[k] for k in codes]
        aligned.append(np.asarray(a["scores"], dtype=np.float64)[np.ix_(r, c)])
        t = np.asarray(a["targets"])[np.ix_(r, c)].astype(np.uint8)
        if targets is None:
            targets = t
        elif not np.array_equal(t, targets):
            return "the arms disagree on the test labels of the same records"
    assert targets is not None  # `arrays` is not empty
    return aligned, targets, ids


def _seed(trial: Any) -> str | None:
    return trial.params.get("seed")


def paired_table(rec: SweepRecord, *, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> pd.DataFrame:
    """One row per (cell, protocol): paired bootstrap Δ vs the baseline cell, raw and Holm p, significance."""
    gs = groups(rec) if any(t.cell for t in rec.trials) else []
    baseline = next((g for g in gs if g.name == "baseline"), None)
    if baseline is None:
        return pd.DataFrame()
    rows = []
    for g in gs:
        if g is baseline:
            continue
        for protocol in scalar_protocols(rec.trials):
            row = _compare(rec, g, baseline, protocol, n_boot, seed)
            if row is not None:
                rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["p_holm"] = holm(table["p_value"].tolist())
    table["significant"] = [bool(math.isfinite(p) and p < ALPHA) for p in table["p_holm"]]
    return table


def _compare(rec: SweepRecord, g: Group, base: Group, protocol: str, n_boot: int, seed: int) -> dict[str, Any] | None:
    ran = [t for t in g.trials if math.isfinite(t.value(f"{protocol}.test_auc")) or rec.protocol_json(t, protocol)]
    if not ran:
        return None
    row: dict[str, Any] = {"cell": g.name, "protocol": protocol, "n_pairs": 0, "n_records": 0, "n_classes": 0,
                           "diff": math.nan, "se": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                           "p_value": math.nan, "note": ""}
    by_seed = {_seed(t): t for t in base.trials}
    arrays, missing, unpaired = [], 0, 0
    for t in ran:
        other = by_seed.get(_seed(t))
        if other is None:
            unpaired += 1
            continue
        a, b = rec.protocol_scores(t, protocol), rec.protocol_scores(other, protocol)
        if a is None or b is None:
            missing += 1
            continue
        arrays += [a, b]
    notes = []
    if unpaired:
        notes.append(f"{unpaired} seed(s) without a baseline trial of the same seed")
    if missing:
        notes.append(f"{missing} seed pair(s) without per-record test scores (results/{protocol}.scores.npz; older sweeps)")
    if arrays:
        aligned = _align(arrays)
        if isinstance(aligned, str):
            notes.append(aligned)
        else:
            scores, targets, _ = aligned
            pairs = list(zip(scores[0::2], scores[1::2]))
            res = paired_bootstrap(pairs, targets, resample_indices(len(targets), n_boot, seed))
            row.update(n_pairs=res.n_pairs, n_records=res.n_records, n_classes=res.n_classes, diff=res.diff,
                       se=res.se, ci_low=res.low, ci_high=res.high, p_value=res.p_value)
    row["note"] = "; ".join(notes)
    return row
