"""Anti-aliased resampling to the dataset rate with a polyphase filter (`scipy.signal.resample_poly`).

The rate ratio is turned into a small rational factor (500→100 = 1/5, 257→100 = 100/257); the
filter is resample_poly's Kaiser-windowed FIR, which low-passes below the new Nyquist frequency
before decimating. (The reference code used skimage's cubic `resize`; a proper anti-aliasing filter
agrees better with PTB-XL's own 100 Hz files, see tests/data/test_resample.py.)
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

_MAX_DENOMINATOR = 1000  # rates are given to 3 decimals at most in any corpus we read


def rational_factor(fs_in: float, fs_out: float) -> tuple[int, int]:
    """(up, down) with up/down ≈ fs_out/fs_in in lowest terms."""
    if not (fs_in > 0 and fs_out > 0 and math.isfinite(fs_in) and math.isfinite(fs_out)):
        raise ValueError(f"sampling rates must be positive and finite, got {fs_in} → {fs_out}")
    ratio = Fraction(fs_out).limit_denominator(_MAX_DENOMINATOR) / Fraction(fs_in).limit_denominator(
        _MAX_DENOMINATOR
    )
    return ratio.numerator, ratio.denominator


def resampled_length(n: int, fs_in: float, fs_out: float) -> int:
    """round(n * fs_out / fs_in), halves rounded up: the length every resampled record gets."""
    return int(math.floor(n * fs_out / fs_in + 0.5))


def resample(signal: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """(leads, time) at `fs_in` → (leads, resampled_length) at `fs_out`, float64."""
    signal = np.asarray(signal, dtype=np.float64)
    if fs_in == fs_out:
        return signal
    from scipy.signal import resample_poly  # slow to import (~1 s); only ingest of other rates needs it

    up, down = rational_factor(fs_in, fs_out)
    n_out = resampled_length(signal.shape[-1], fs_in, fs_out)
    # padtype="line": extrapolate linearly instead of zero padding, so a lead with a DC offset or
    # baseline slope does not ring at the record edges.
    out = resample_poly(signal, up, down, axis=-1, padtype="line")
    if out.shape[-1] < n_out:  # cannot happen for resample_poly's ceil length, kept as a guard
        out = np.concatenate([out, np.repeat(out[..., -1:], n_out - out.shape[-1], axis=-1)], axis=-1)
    return out[..., :n_out]
