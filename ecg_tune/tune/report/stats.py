"""Small statistics of the report: mean with a 95% t-interval over seeds, Welch differences."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95
ALPHA = 0.05


@dataclass
class Summary:
    n: int
    mean: float
    sd: float
    low: float
    high: float
    kind: str  # "t": t-interval over runs; "bootstrap": one run's CI over test records; "": none


@dataclass
class Difference:
    diff: float  # mean(a) - mean(b)
    low: float
    high: float
    p_value: float
    significant: bool


def finite(values: Sequence[float]) -> np.ndarray:
    x = np.asarray([float(v) for v in values], dtype=float)
    return x[np.isfinite(x)]


def summarize(values: Sequence[float], bootstrap: tuple[float, float] | None = None) -> Summary:
    """Mean ± 95% t-interval; with a single run, its bootstrap CI when the protocol gave one."""
    x = finite(values)
    n = len(x)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan, "")
    mean = float(x.mean())
    if n == 1:
        if bootstrap is not None and all(math.isfinite(b) for b in bootstrap):
            return Summary(1, mean, math.nan, float(bootstrap[0]), float(bootstrap[1]), "bootstrap")
        return Summary(1, mean, math.nan, math.nan, math.nan, "")
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + LEVEL / 2, n - 1)) * sd / math.sqrt(n)
    return Summary(n, mean, sd, mean - half, mean + half, "t")


def welch(a: Sequence[float], b: Sequence[float]) -> Difference:
    """Difference of means a − b with its Welch (unequal variances) 95% CI and two-sided p-value."""
    xa, xb = finite(a), finite(b)
    if len(xa) == 0 or len(xb) == 0:
        return Difference(math.nan, math.nan, math.nan, math.nan, False)
    diff = float(xa.mean() - xb.mean())
    if len(xa) < 2 or len(xb) < 2:  # no variance estimate on one side: no interval, no test
        return Difference(diff, math.nan, math.nan, math.nan, False)
    va, vb = xa.var(ddof=1) / len(xa), xb.var(ddof=1) / len(xb)
    se = math.sqrt(va + vb)
    if se == 0.0:  # identical constant values on both sides: the test is undefined
        return Difference(diff, diff, diff, math.nan, False)
    df = (va + vb) ** 2 / (va**2 / (len(xa) - 1) + vb**2 / (len(xb) - 1))
    half = float(stats.t.ppf(0.5 + LEVEL / 2, df)) * se
    p = float(stats.ttest_ind(xa, xb, equal_var=False).pvalue)
    return Difference(diff, diff - half, diff + half, p, bool(p < ALPHA))
