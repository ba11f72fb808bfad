"""10 folds for corpora that ship none: multilabel-stratified (iterative stratification) and grouped by patient.

The reference code stratifies per record (its `clinical_ts/stratify.py`), which lets one patient's
ECGs land in train and test. We stratify groups instead: all records of a patient move together
(records without a patient id are groups of one), following Sechidis et al. (2011), "On the
stratification of multi-label data", applied to groups:

1. each fold wants n/k records and, for each label, count(label)/k records carrying it;
2. repeatedly take the label with the fewest records not yet placed; place each unplaced group
   carrying it (largest first) in the fold that still wants that label most, among the folds with
   room for the group (≥ half its size still wanted), ties broken by the fold that wants the most
   records, then at random;
3. unlabelled groups go, largest first, to the fold that wants the most records.

Deterministic for a given input order and seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _groups(groups: Sequence[str | None]) -> tuple[list[list[int]], np.ndarray]:
    members: dict[object, list[int]] = {}
    for i, g in enumerate(groups):
        key: object = ("record", i) if g is None or g == "" else ("group", g)
        members.setdefault(key, []).append(i)
    lists = list(members.values())
    return lists, np.array([len(m) for m in lists], dtype=np.int64)


def assign_folds(
    labels: Sequence[Sequence[str]],
    groups: Sequence[str | None] | None = None,
    *,
    n_folds: int = 10,
    seed: int = 0,
) -> np.ndarray:
    """Fold numbers 1..n_folds (int8), one per record."""
    n = len(labels)
    if groups is None:
        groups = [None] * n
    if len(groups) != n:
        raise ValueError(f"{n} label lists but {len(groups)} group ids")
    if not 1 <= n_folds <= 127:
        raise ValueError(f"n_folds must be 1..127, got {n_folds}")
    rng = np.random.default_rng(seed)
    members, sizes = _groups(groups)
    vocab = sorted({code for codes in labels for code in codes})
    index = {code: j for j, code in enumerate(vocab)}

    # Label counts per group (records of the group carrying the label).
    group_counts: list[dict[int, int]] = []
    for m in members:
        counts: dict[int, int] = {}
        for i in m:
            for code in set(labels[i]):
                counts[index[code]] = counts.get(index[code], 0) + 1
        group_counts.append(counts)

    want_size = np.full(n_folds, n / n_folds)
    totals = np.zeros(len(vocab))
    for counts in group_counts:
        for j, c in counts.items():
            totals[j] += c
    want_label = np.tile(totals / n_folds, (n_folds, 1))
    remaining = totals.copy()
    carriers: list[list[int]] = [[] for _ in vocab]
    for g, counts in enumerate(group_counts):
        for j in counts:
            carriers[j].append(g)

    order = rng.permutation(len(members))  # random tie-break order of groups
    rank = np.empty(len(members), dtype=np.int64)
    rank[order] = np.arange(len(members))
    fold_of_group = np.full(len(members), -1, dtype=np.int64)

    def place(g: int, fold: int) -> None:
        fold_of_group[g] = fold
        want_size[fold] -= sizes[g]
        for j, c in group_counts[g].items():
            want_label[fold, j] -= c
            remaining[j] -= c

    def best(g: int, scores: list[np.ndarray]) -> int:
        # Only folds with room for (about) the whole group, so that big patients cannot pile up in
        # one fold; if none has room, all folds compete.
        candidates = np.nonzero(want_size >= sizes[g] / 2)[0]
        if len(candidates) == 0:
            candidates = np.arange(n_folds)
        for s in scores:
            top = s[candidates].max()
            candidates = candidates[np.isclose(s[candidates], top)]
            if len(candidates) == 1:
                return int(candidates[0])
        return int(rng.choice(candidates))

    while True:
        open_labels = np.nonzero(remaining > 0)[0]
        if len(open_labels) == 0:
            break
        # The rarest label still to place; ties by vocabulary order (deterministic).
        j = int(open_labels[np.argmin(remaining[open_labels])])
        todo = [g for g in carriers[j] if fold_of_group[g] < 0]
        todo.sort(key=lambda g: (-sizes[g], rank[g]))
        for g in todo:
            place(g, best(g, [want_label[:, j], want_size]))

    rest = [g for g in range(len(members)) if fold_of_group[g] < 0]
    rest.sort(key=lambda g: (-sizes[g], rank[g]))
    for g in rest:
        place(g, best(g, [want_size]))

    folds = np.empty(n, dtype=np.int8)
    for g, m in enumerate(members):
        folds[m] = fold_of_group[g] + 1
    return folds


def stratified_group_folds(labels: np.ndarray, groups: np.ndarray, rng: np.random.Generator, n_folds: int) -> np.ndarray:
    """Folds 1..n_folds: whole groups (patients) per fold, label counts balanced greedily.

    Groups are placed rarest-label first (larger groups first among equals, random ties), each into
    the fold that most lacks its labels and records relative to an even share.
    """
    n = len(groups)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    n_groups = int(groups.max()) + 1
    g_counts = np.zeros((n_groups, labels.shape[1]))
    np.add.at(g_counts, groups, labels.astype(np.float64))
    g_sizes = np.bincount(groups, minlength=n_groups).astype(np.float64)
    totals = labels.sum(axis=0).astype(np.float64)
    rarity = np.where(g_counts > 0, totals, np.inf).min(axis=1)
    order = np.lexsort((rng.random(n_groups), -g_sizes, rarity))
    want_labels = np.maximum(totals / n_folds, 1e-9)
    want_size = n / n_folds
    have_labels = np.zeros((n_folds, labels.shape[1]))
    have_size = np.zeros(n_folds)
    g_fold = np.zeros(n_groups, dtype=np.int64)
    for g in order:
        if g_sizes[g] == 0:
            continue
        present = g_counts[g] > 0
        need = ((want_labels[present] - have_labels[:, present]) / want_labels[present]).sum(axis=1)
        need += (want_size - have_size) / want_size
        f = int(np.argmax(need))
        g_fold[g] = f
        have_labels[f] += g_counts[g]
        have_size[f] += g_sizes[g]
    return g_fold[groups] + 1
