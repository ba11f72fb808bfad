"""Window sampling: exact slices, inclusive start range, full coverage of records by evaluation windows."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecg_tune.data.store import SignalStore
from ecg_tune.data.windows import (
    gather_windows,
    normalize,
    random_starts,
    random_windows,
    sliding_starts,
    sliding_windows,
)
from ecg_tune.errors import ConfigError

LEADS = ("I", "II", "V1")


def make_store(lengths: list[int], seed: int = 0, units_per_mv: float = 1000.0) -> SignalStore:
    rng = np.random.default_rng(seed)
    signals = [rng.normal(0.0, 1.0, (len(LEADS), n)).round(3) for n in lengths]
    return SignalStore.from_signals(signals, LEADS, fs=100.0, units_per_mv=units_per_mv)


def expected_window(store: SignalStore, index: int, start: int, window: int) -> np.ndarray:
    """The window cut by hand from store.signal(index), zero-padded on the right."""
    sig = store.signal(index)[:, start : start + window]
    out = np.zeros((store.n_leads, window), dtype=np.float32)
    out[:, : sig.shape[1]] = sig
    return out


def test_sliding_starts_ptbxl_protocol():
    # Paper notes §2.2: a 10 s record at 100 Hz, 250-sample windows, stride 125 → 7 windows.
    np.testing.assert_array_equal(sliding_starts(1000, 250, 125), [0, 125, 250, 375, 500, 625, 750])


def test_sliding_starts_adds_a_final_window_at_the_end():
    np.testing.assert_array_equal(sliding_starts(1010, 250, 125), [0, 125, 250, 375, 500, 625, 750, 760])
    np.testing.assert_array_equal(sliding_starts(250, 250, 125), [0])
    np.testing.assert_array_equal(sliding_starts(100, 250, 125), [0])  # shorter: one padded window


@settings(max_examples=200, deadline=None)
@given(length=st.integers(1, 3000), window=st.integers(1, 600), stride_frac=st.floats(0.0, 1.0))
def test_sliding_starts_cover_every_sample(length, window, stride_frac):
    stride = max(1, round(stride_frac * window))  # coverage needs stride <= window
    starts = sliding_starts(length, window, stride)
    assert starts[0] == 0
    assert np.all(np.diff(starts) > 0) and np.all(np.diff(starts) <= stride)
    assert starts[-1] == max(length - window, 0)
    covered = np.zeros(length, dtype=bool)
    for s in starts:
        covered[s : s + window] = True
    assert covered.all()
    # Regular grid except possibly the last window.
    regular = starts[:-1] if len(starts) > 1 and starts[-1] % stride else starts
    np.testing.assert_array_equal(regular, np.arange(len(regular)) * stride)


@settings(max_examples=100, deadline=None)
@given(lengths=st.lists(st.integers(1, 400), min_size=1, max_size=20), window=st.integers(1, 300),
       seed=st.integers(0, 2**32 - 1))
def test_random_starts_stay_inside_and_reach_both_ends(lengths, window, seed):
    lengths_arr = np.array(lengths)
    last = np.maximum(lengths_arr - window, 0)
    rng = np.random.default_rng(seed)
    draws = random_starts(np.tile(lengths_arr, 400), window, rng).reshape(400, -1)
    assert draws.dtype == np.int64
    assert np.all(draws >= 0) and np.all(draws <= last)
    # With up to 6 positions and 400 draws, missing an end has probability < 2·(5/6)^400 ≈ 1e-31.
    small = last <= 5
    assert np.all(draws[:, small].min(axis=0) == 0)
    assert np.all(draws[:, small].max(axis=0) == last[small])


def test_random_starts_are_uniform_including_the_last_position():
    rng = np.random.default_rng(1)
    draws = random_starts(np.full(60000, 13), 10, rng)  # positions 0..3
    counts = np.bincount(draws, minlength=4)
    assert len(counts) == 4
    # Chi-square with 3 dof: 16.27 is the 0.999 quantile.
    chi2 = ((counts - 15000) ** 2 / 15000).sum()
    assert chi2 < 16.27, counts


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 300), min_size=1, max_size=8), window=st.integers(1, 200),
       seed=st.integers(0, 2**32 - 1))
def test_random_windows_equal_their_slices(lengths, window, seed):
    store = make_store(lengths, seed=seed % 1000)
    indices = np.random.default_rng(seed).integers(0, len(lengths), size=2 * len(lengths))
    got = random_windows(store, indices, window, np.random.default_rng(seed))
    starts = random_starts(store.lengths[indices], window, np.random.default_rng(seed))
    assert got.shape == (len(indices), len(LEADS), window) and got.dtype == np.float32
    for k, (i, s) in enumerate(zip(indices, starts)):
        np.testing.assert_array_equal(got[k], expected_window(store, i, s, window))


def test_random_windows_lead_selection_and_out_buffer():
    store = make_store([500, 320, 260])
    out = np.full((3, 2, 250), np.nan, dtype=np.float32)
    got = random_windows(store, [2, 0, 1], 250, np.random.default_rng(5), lead_indices=[2, 0], out=out)
    assert got is out
    starts = random_starts(store.lengths[[2, 0, 1]], 250, np.random.default_rng(5))
    for k, (i, s) in enumerate(zip([2, 0, 1], starts)):
        np.testing.assert_array_equal(out[k], expected_window(store, i, s, 250)[[2, 0]])
    with pytest.raises(ValueError):
        random_windows(store, [0], 250, np.random.default_rng(0), out=np.empty((1, 3, 249), np.float32))


def test_short_records_are_zero_padded_on_the_right():
    store = make_store([100, 40])
    got = random_windows(store, [0, 1], 250, np.random.default_rng(0))
    np.testing.assert_array_equal(got[0, :, :100], store.signal(0))
    np.testing.assert_array_equal(got[1, :, :40], store.signal(1))
    assert not got[0, :, 100:].any() and not got[1, :, 40:].any()


def test_values_are_millivolts_at_the_store_scale():
    sig = np.array([[0.5, -1.25, 2.0, 0.0]] * 3)
    for units in (1000.0, 200.0):
        store = SignalStore.from_signals([sig], LEADS, fs=100.0, units_per_mv=units)
        np.testing.assert_allclose(gather_windows(store, [0], [0], 4)[0], sig, rtol=0, atol=0.5 / units)


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(1, 700), min_size=1, max_size=5), window=st.integers(10, 300),
       stride_frac=st.floats(0.25, 1.0))
def test_sliding_windows_cover_each_record(lengths, window, stride_frac):
    stride = max(1, round(stride_frac * window))  # keeps the number of windows small
    store = make_store(lengths)
    indices = np.arange(len(lengths))[::-1]
    windows, record_pos = sliding_windows(store, indices, window, stride)
    assert windows.shape[1:] == (len(LEADS), window) and record_pos.dtype == np.int64
    assert np.all(np.diff(record_pos) >= 0)  # a record's windows are consecutive
    for p, i in enumerate(indices):
        mine = windows[record_pos == p]
        starts = sliding_starts(int(store.lengths[i]), window, stride)
        assert len(mine) == len(starts)
        rebuilt = np.zeros((len(LEADS), int(store.lengths[i])), dtype=np.float32)
        for w, s in zip(mine, starts):
            np.testing.assert_array_equal(w, expected_window(store, i, s, window))
            n = min(window, rebuilt.shape[1] - s)
            rebuilt[:, s : s + n] = w[:, :n]
        np.testing.assert_array_equal(rebuilt, store.signal(i))  # every sample is covered


def test_sliding_windows_default_protocol_and_leads():
    store = make_store([1000, 1000])
    windows, record_pos = sliding_windows(store, [1, 0], lead_indices=[1])
    assert windows.shape == (14, 1, 250)
    np.testing.assert_array_equal(record_pos, [0] * 7 + [1] * 7)
    np.testing.assert_array_equal(windows[7 + 6, 0], store.signal(0)[1, 750:1000])


def test_bad_window_or_stride_is_a_config_error():
    store = make_store([300])
    with pytest.raises(ConfigError, match="window"):
        random_windows(store, [0], 0, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="stride"):
        sliding_windows(store, [0], 250, 0)


def test_normalize_per_lead():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (5, 3, 50)).astype(np.float32)
    mean, std = np.array([1.0, -2.0, 0.5]), np.array([2.0, 0.5, 0.0])
    z = normalize(x, mean, std)
    assert z.dtype == np.float32 and z.shape == x.shape
    np.testing.assert_allclose(z[:, 0], (x[:, 0] - 1.0) / 2.0, rtol=1e-6)
    np.testing.assert_allclose(z[:, 1], (x[:, 1] + 2.0) / 0.5, rtol=1e-6)
    np.testing.assert_allclose(z[:, 2], x[:, 2] - 0.5, rtol=1e-6)  # zero std: centred only
    np.testing.assert_allclose(normalize(x[0], mean, std), z[0])  # (leads, time) works too
