"""Resampling: rational factors, lengths, anti-aliasing, and agreement with PTB-XL's own 100 Hz files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import wfdb
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import resample_poly

from ecg_tune.data.resample import rational_factor, resample, resampled_length


@pytest.mark.parametrize(
    ("fs_in", "fs_out", "expected"),
    [(500, 100, (1, 5)), (257, 100, (100, 257)), (400, 100, (1, 4)), (1000, 100, (1, 10)), (360, 100, (5, 18)),
     (100, 250, (5, 2)), (128.5, 100, (200, 257))],
)
def test_rational_factor(fs_in, fs_out, expected):
    assert rational_factor(fs_in, fs_out) == expected


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
def test_rational_factor_rejects_bad_rates(bad):
    with pytest.raises(ValueError):
        rational_factor(bad, 100)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3000), fs_in=st.sampled_from([257.0, 360.0, 400.0, 500.0, 1000.0, 50.0]))
def test_length_is_rounded_duration(n, fs_in):
    out = resample(np.zeros((2, n)), fs_in, 100.0)
    assert out.shape == (2, resampled_length(n, fs_in, 100.0))
    assert out.shape[1] == int(np.floor(n * 100.0 / fs_in + 0.5))


def test_same_rate_is_identity():
    x = np.random.default_rng(0).normal(size=(3, 100))
    np.testing.assert_array_equal(resample(x, 100, 100), x)


@settings(max_examples=20, deadline=None)
@given(fs_in=st.sampled_from([257.0, 400.0, 500.0, 1000.0]), freq=st.floats(1.0, 30.0))
def test_passband_tone_survives(fs_in, freq):
    t = np.arange(int(20 * fs_in)) / fs_in
    y = resample(np.sin(2 * np.pi * freq * t)[None], fs_in, 100.0)[0]
    t_out = np.arange(len(y)) / 100.0
    middle = slice(100, len(y) - 100)  # away from the edges
    np.testing.assert_allclose(y[middle], np.sin(2 * np.pi * freq * t_out)[middle], atol=0.02)


@pytest.mark.parametrize("fs_in", [257.0, 500.0, 1000.0])
def test_tone_above_new_nyquist_is_removed(fs_in):
    """Anti-aliasing: a 70 Hz tone would alias to 30 Hz at 100 Hz without the low-pass filter."""
    t = np.arange(int(20 * fs_in)) / fs_in
    y = resample(np.sin(2 * np.pi * 70.0 * t)[None], fs_in, 100.0)[0]
    assert np.abs(y[100:-100]).max() < 0.01


def test_ptbxl_500hz_matches_its_own_100hz_version(ptbxl_root):
    """Our 500→100 Hz agrees with PTB-XL's 100 Hz files at least as well as plain resample_poly does."""
    db = pd.read_csv(ptbxl_root / "ptbxl_database.csv", index_col="ecg_id")
    ours, plain = [], []
    for ecg_id in range(1, 21):  # the pipeline test in test_ingest.py covers all 50
        hr, _ = wfdb.rdsamp(str(ptbxl_root / db.loc[ecg_id, "filename_hr"]))
        lr, _ = wfdb.rdsamp(str(ptbxl_root / db.loc[ecg_id, "filename_lr"]))
        mine = resample(hr.T, 500.0, 100.0)
        reference = resample_poly(hr, 1, 5, axis=0).T
        for lead in range(12):
            ours.append(np.corrcoef(mine[lead], lr[:, lead])[0, 1])
            plain.append(np.corrcoef(reference[lead], lr[:, lead])[0, 1])
    assert np.nanmedian(ours) >= np.nanmedian(plain) - 1e-6
    assert np.nanmedian(ours) > 0.99
