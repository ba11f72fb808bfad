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
