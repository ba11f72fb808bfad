"""ECG augmentations: contracts (shape, dtype, device, seeding), and each one's documented statistics
checked against independent numpy formulas."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from ecg_tune.data.leads import DEFAULT_ORDER
from ecg_tune.errors import ConfigError
from ecg_tune.ssl.augment import AUGMENTATIONS, Augmentation, Pipeline, build_pipeline, physiological_noise
from ecg_tune.ssl.augment.random_resized_crop import crop_map, lerp_at

NAMES = [
    "gaussian_noise",
    "random_resized_crop",
    "timeout",
    "channel_resize",
    "dynamic_time_warp",
    "baseline_wander",
    "powerline_noise",
    "em_noise",
    "baseline_shift",
    "gaussian_blur",
    "normalize",
    "random_crop",
]
DETERMINISTIC = {"gaussian_blur", "normalize"}
RANDOM = [n for n in NAMES if n not in DETERMINISTIC]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
T = 300  # longer than random_crop's default 250, so its start is random too


def gen(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def aug(name: str, fs: float = 100.0, **params) -> Pipeline:
    return build_pipeline([name], {name: params}, fs)


def signal(b: int, leads: int, t: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(b, leads, t, generator=gen(seed), dtype=torch.float64).to(dtype)


def ramp(b: int, leads: int, t: int) -> torch.Tensor:
    """x[b, l, t] = t: the output of a pure time warp is then its source-position map."""
    return torch.arange(t, dtype=torch.float64).expand(b, leads, t).clone()


def expected_shape(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape[:2] + (250,) if name == "random_crop" else shape


# ---------------------------------------------------------------------------------------------
# Registry, defaults, pipeline building


def test_registry_lists_every_augmentation_with_a_params_dataclass():
    assert sorted(NAMES) == AUGMENTATIONS.names()
    for name in NAMES:
        cls = AUGMENTATIONS[name]
        assert issubclass(cls, Augmentation)
        assert dataclasses.is_dataclass(cls.Params)
        cls.Params()  # every field has a default


def test_defaults_are_the_pretraining_values_of_the_paper():
    def defaults(name):
        return dataclasses.asdict(AUGMENTATIONS[name].Params())

    assert defaults("gaussian_noise") == {"sigma": 0.005}
    assert defaults("random_resized_crop") == {"min_fraction": 0.5, "max_fraction": 1.0, "interior": "subset"}
    assert defaults("timeout") == {"min_fraction": 0.2, "max_fraction": 0.4}
    assert defaults("channel_resize") == {"min_gain": 0.5, "max_gain": 2.0}
    assert defaults("dynamic_time_warp") == {"warps": 3, "radius": 10, "step": 2}
    assert defaults("baseline_wander")["max_amplitude"] == 0.1
    assert defaults("powerline_noise")["max_amplitude"] == 0.2
    assert defaults("em_noise")["max_amplitude"] == 0.5
    assert defaults("baseline_shift")["max_amplitude"] == 1.0
    assert defaults("gaussian_blur") == {"kernel": [0.1, 0.2, 0.4, 0.2, 0.1]}
    assert defaults("random_crop") == {"length": 250}


@pytest.mark.parametrize(
    ("names", "params", "key"),
    [
        (["random_resized_crop", "time_out"], None, "augment.pipeline"),
        (["timeout"], {"timeout": {"bogus": 1}}, "augment.timeout.bogus"),
        (["timeout"], {"timeout": {"min_fraction": "abc"}}, "augment.timeout.min_fraction"),
        (
            ["timeout"],
            {"timeout": {"min_fraction": 0.5, "max_fraction": 0.3}},
            "augment.timeout.min_fraction",
        ),
        (["timeout"], {"time_out": {"min_fraction": 0.1}}, "augment.time_out"),
        (["em_noise"], {"em_noise": {"max_amplitude": -1}}, "augment.em_noise.max_amplitude"),
        (["gaussian_blur"], {"gaussian_blur": {"kernel": "0.5,0.5"}}, "augment.gaussian_blur.kernel"),
        (["normalize"], {"normalize": {"lead_names": "I,II,XYZ"}}, "augment.normalize.lead_names"),
        (["normalize"], {"normalize": {"mean": "0,0"}}, "augment.normalize.mean"),
        (["dynamic_time_warp"], {"dynamic_time_warp": {"radius": 0}}, "augment.dynamic_time_warp.radius"),
    ],
)
def test_build_pipeline_errors_name_the_bad_key(names, params, key):
    with pytest.raises(ConfigError) as err:
        build_pipeline(names, params, 100.0)
    assert err.value.key == key


def test_build_pipeline_coerces_flat_values_and_keeps_order():
    pipe = build_pipeline(
        ["random_resized_crop", "timeout"], {"timeout": {"min_fraction": "0.1"}, "em_noise": {}}, 100.0
    )
    assert [type(s).__name__ for s in pipe.steps] == ["RandomResizedCrop", "TimeOut"]
    assert pipe.steps[1].params.min_fraction == 0.1
    assert pipe.steps[1].fs == 100.0


def test_physiological_noise_maps_the_level_maxima_in_bw_em_pl_bs_order():
    pipe = physiological_noise((0.1, 0.5, 0.2, 1.0), 100.0)  # L2 of notes 6.5
    amps = {type(s).__name__: s.params.max_amplitude for s in pipe.steps}
    assert amps == {"BaselineWander": 0.1, "EMNoise": 0.5, "PowerlineNoise": 0.2, "BaselineShift": 1.0}
    x = signal(4, 12, 250)
    y = pipe(x, gen(0))
    assert y.shape == x.shape and torch.isfinite(y).all() and not torch.equal(x, y)


# ---------------------------------------------------------------------------------------------
# Contracts shared by every augmentation


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_and_device_are_kept(name, dtype, device):
    x = signal(3, 12, T, dtype=dtype).to(device)
    y = aug(name)(x, gen(1, device))
    assert y.shape == expected_shape(name, x.shape)
    assert y.dtype == dtype and y.device == x.device
    assert torch.isfinite(y.float()).all()


@pytest.mark.parametrize("name", RANDOM)
def test_same_seed_same_output_other_seed_other_output(name):
    x = signal(4, 12, T)
    a = aug(name)
    assert torch.equal(a(x, gen(7)), a(x, gen(7)))
    assert not torch.equal(a(x, gen(7)), a(x, gen(8)))


@pytest.mark.parametrize("name", RANDOM)
def test_each_sample_of_a_batch_gets_its_own_randomness(name):
    # baseline_shift: 30 s so that few windows draw zero segments (count ~ U{0..9})
    length = 3000 if name == "baseline_shift" else T
    x = signal(1, 12, length).expand(8, 12, length).clone()  # 8 identical windows
    y = aug(name)(x, gen(3))
    assert any(not torch.equal(y[0], y[i]) for i in range(1, 8))
    # ... and most pairs differ (one shared draw for the batch would make them all equal)
    distinct = {y[i].numpy().tobytes() for i in range(8)}
    assert len(distinct) >= 6


@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
def test_deterministic_augmentations_ignore_the_generator(name):
    x = signal(2, 12, T)
    assert torch.equal(aug(name)(x, gen(1)), aug(name)(x, gen(2)))


def test_default_pipeline_is_reproducible_from_a_seed():
    pipe = build_pipeline(["random_resized_crop", "timeout"], None, 100.0)
    x = signal(16, 12, 250)
    assert torch.equal(pipe(x, gen(5)), pipe(x, gen(5)))


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(NAMES),
    batch=st.integers(1, 3),
    leads=st.sampled_from([1, 8, 12]),
    length=st.integers(1, 400),
    fs=st.sampled_from([100.0, 250.0, 500.0]),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
)
def test_any_batch_lead_count_and_length(name, batch, leads, length, fs, dtype):
    params: dict = {}
    if name == "random_crop":
        params = {"length": max(1, length // 2)}
    if name == "normalize":
        params = {"lead_names": ",".join(DEFAULT_ORDER[:leads]) if leads > 1 else "II"}
    x = signal(batch, leads, length, dtype=dtype)
    y = aug(name, fs, **params)(x, gen(0))
    want = (batch, leads, params["length"]) if name == "random_crop" else x.shape
    assert y.shape == want and y.dtype == dtype
    assert torch.isfinite(y.float()).all()


# ---------------------------------------------------------------------------------------------
# Time-domain augmentations


def test_timeout_zeroes_one_contiguous_block_of_20_to_40_percent_in_all_leads():
    length = 250
    x = torch.rand(200, 12, length, generator=gen(0), dtype=torch.float64) + 1.0  # never 0
    y = aug("timeout")(x, gen(1)).numpy()
    zero = y == 0
    sizes = []
    for b in range(len(y)):
        assert (zero[b] == zero[b, 0]).all()  # same block in every lead
        where = np.flatnonzero(zero[b, 0])
        assert where.size and (np.diff(where) == 1).all()  # one contiguous block
        assert int(0.2 * length) <= where.size <= int(0.4 * length)
        np.testing.assert_array_equal(y[b][:, ~zero[b, 0]], x[b].numpy()[:, ~zero[b, 0]])
        sizes.append(where.size)
    # r ~ U(0.2, 0.4): the block sizes spread over the range
    assert min(sizes) < 0.25 * length and max(sizes) > 0.35 * length


def test_timeout_block_size_and_start_are_uniform():
    length, batch = 250, 20000
    keep = aug("timeout").steps[0].keep_mask(batch, length, "cpu", torch.float32, gen(9))
    assert keep.shape == (batch, 1, length)
    zero = (keep[:, 0] == 0).numpy()
    sizes = zero.sum(axis=1)
    starts = zero.argmax(axis=1)
    # one contiguous block per window, of int(r*T) samples with r ~ U(0.2, 0.4): sizes 50..99 (100 has
    # probability 0), each about equally often
    assert all(zero[b, starts[b] : starts[b] + sizes[b]].all() for b in range(0, batch, 97))
    counts = np.bincount(sizes, minlength=101)[50:100]
    assert sizes.min() >= 50 and sizes.max() <= 99
    assert stats.chisquare(counts).pvalue > 1e-3
    # start uniform over 0..T-size inclusive, whatever the size: (start + U) / (T - size + 1) ~ U(0, 1)
    u = (starts + np.random.default_rng(0).random(batch)) / (length - sizes + 1)
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    assert (starts == length - sizes).any() and (starts == 0).any()  # both extreme starts occur


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_timeout_in_place_equals_out_of_place(dtype):
    timeout = aug("timeout").steps[0]
    x = signal(16, 12, 250, dtype=dtype)
    want = timeout(x, gen(4))
    y = x.clone()
    out = timeout.forward_(y, gen(4))
    assert out.data_ptr() == y.data_ptr() and torch.equal(out, want)


class _View(Augmentation):
    """A step that returns a view of its input (as a crop by slicing would)."""

    Params = dict

    def forward(self, x, generator=None):
        return x[..., :]


@pytest.mark.parametrize(
    "names",
    [["random_resized_crop", "timeout"], ["channel_resize", "timeout", "timeout"], ["timeout", "timeout"]],
)
def test_pipeline_steps_in_place_give_the_same_result_and_leave_the_input_alone(names):
    pipe = build_pipeline(names, None, 100.0)
    x = signal(32, 12, 250)
    before = x.clone()
    y = pipe(x, gen(5))
    g = gen(5)
    want = x
    for step in pipe.steps:  # each step on its own, out of place
        want = step(want, g)
    assert torch.equal(y, want)
    assert torch.equal(x, before)


def test_pipeline_never_writes_into_a_view_of_its_input():
    timeout = aug("timeout").steps[0]
    x = signal(8, 12, 250)
    before = x.clone()
    y = Pipeline([_View({}, 100.0), timeout])(x, gen(1))
    assert torch.equal(x, before) and torch.equal(y, timeout(x, gen(1)))
    xg = x.clone().requires_grad_(True)  # under autograd nothing is overwritten either
    yg = build_pipeline(["random_resized_crop", "timeout"], None, 100.0)(xg, gen(2))
    yg.sum().backward()
    assert xg.grad is not None and torch.equal(xg.detach(), x)


def test_random_resized_crop_is_an_interpolation_of_a_contiguous_crop():
    batch, length = 64, 250
    rrc = aug("random_resized_crop")
    pos = rrc(ramp(batch, 3, length), gen(4)).numpy()[:, 0]  # source position of every output sample
    x = signal(batch, 3, length, dtype=torch.float64)
    y = rrc(x, gen(4)).numpy()
    for b in range(batch):
        start, stop = pos[b, 0], pos[b, -1]  # the ends are the first and last crop samples
        crop = int(round(stop - start)) + 1
        assert int(0.5 * length) <= crop <= length
        assert start == int(start) and stop == int(stop) and 0 <= start and stop <= length - 1
        assert (np.diff(pos[b]) > 0).all()
        # Every crop sample appears exactly once at an integer position; the rest is interpolated.
        exact = pos[b][np.isclose(pos[b], np.round(pos[b]), atol=1e-9)]
        np.testing.assert_array_equal(np.round(exact), np.arange(start, stop + 1))
        for lead in range(3):
            np.testing.assert_allclose(
                y[b, lead], np.interp(pos[b], np.arange(length), x[b, lead].numpy()), atol=1e-12
            )
        assert y[b, 0, 0] == x[b, 0, int(start)] and y[b, 0, -1] == x[b, 0, int(stop)]
    # The stretch is non-uniform: gaps between placed samples vary within one window.
    gaps = np.diff(np.flatnonzero(np.isclose(pos[0], np.round(pos[0]), atol=1e-9)))
    assert len(set(gaps.tolist())) > 1 or len(gaps) == length - 1


def _np_resized_crop(x: np.ndarray, start: np.ndarray, crop: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Independent per-window, per-lead version: crop sample i sits at output knots[b, i], np.interp
    fills the rest."""
    batch, leads, length = x.shape
    out = np.empty_like(x)
    for b in range(batch):
        placed = knots[b, : crop[b]]
        window = x[b, :, start[b] : start[b] + crop[b]]
        for lead in range(leads):
            out[b, lead] = np.interp(np.arange(length), placed, window[lead])
    return out


@pytest.mark.parametrize(
    "length, fractions",
    [(250, (0.5, 1.0)), (250, (0.1, 0.3)), (1000, (0.5, 1.0)), (3, (0.5, 1.0)), (7, (0.1, 1.0)), (40, (1.0, 1.0))],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_random_resized_crop_equals_a_numpy_loop_through_its_sampled_positions(length, fractions, dtype):
    lo, hi = fractions
    rrc = aug("random_resized_crop", min_fraction=lo, max_fraction=hi).steps[0]
    batch = 48
    start, crop, knots = rrc.sample(batch, length, "cpu", gen(11))
    start, crop, knots = start.numpy(), crop.numpy(), knots.numpy()
    # The positions obey the contract: ends 0 and T-1, crop-2 sorted distinct interior integers.
    assert ((crop >= max(2, int(lo * length))) & (crop <= max(2, int(hi * length)))).all()
    assert ((start >= 0) & (start + crop <= length)).all()
    for b in range(batch):
        placed = knots[b, : crop[b]]
        assert placed[0] == 0 and placed[-1] == length - 1
        assert (placed == np.round(placed)).all() and (np.diff(placed) > 0).all()
        assert (knots[b, crop[b] :] == length - 1).all()
    x = signal(batch, 5, length, dtype=dtype)
    y = rrc(x, gen(11)).numpy()  # same generator state: the same positions
    want = _np_resized_crop(x.numpy(), start, crop, knots)
    np.testing.assert_allclose(y, want, rtol=0, atol=1e-12 if dtype == torch.float64 else 1e-6)
    for b in range(batch):  # crop samples appear bit for bit at their positions
        placed = knots[b, : crop[b]].astype(int)
        np.testing.assert_array_equal(y[b][:, placed], x[b, :, start[b] : start[b] + crop[b]].numpy())
    if lo == hi == 1.0:
        np.testing.assert_array_equal(y, x.numpy())  # the whole window at every position: identity


def test_crop_map_of_a_hand_made_placement():
    # T = 6, crop of 4 samples starting at input 1, placed at outputs 0, 2, 3, 5.
    knots = torch.tensor([[0.0, 2.0, 3.0, 5.0, 5.0, 5.0, 5.0]])
    left, frac = crop_map(torch.tensor([1]), knots, torch.float64)
    assert left.tolist() == [[1, 1, 2, 3, 3, 4]]
    assert frac.tolist() == [[0.0, 0.5, 0.0, 0.0, 0.5, 0.0]]


@pytest.mark.parametrize("chunk", [7 * 12 * 30, 1 << 18])  # several uneven chunks / one
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lerp_at_equals_a_loop_in_chunks_and_under_autograd(monkeypatch, chunk, dtype):
    monkeypatch.setattr("ecg_tune.ssl.augment.random_resized_crop.CHUNK_ELEMENTS", chunk)
    batch, leads, length, steps = 50, 12, 40, 30
    x = signal(batch, leads, length, dtype=dtype)
    g = gen(2)
    left = torch.randint(0, length, (batch, steps), generator=g)
    frac = torch.rand(batch, steps, generator=g, dtype=torch.float64)
    frac[left == length - 1] = 0.0
    want = np.empty((batch, leads, steps))
    xn, ln, fn = x.numpy(), left.numpy(), frac.to(dtype).numpy()
    for b in range(batch):
        for j in range(steps):
            lo, hi = ln[b, j], min(ln[b, j] + 1, length - 1)
            want[b, :, j] = xn[b, :, lo] + fn[b, j] * (xn[b, :, hi] - xn[b, :, lo])
    y = lerp_at(x, left, frac)
    assert y.dtype == dtype
    np.testing.assert_allclose(y.numpy(), want, rtol=0, atol=1e-12 if dtype == torch.float64 else 1e-6)
    xg = x.clone().requires_grad_(True)
    yg = lerp_at(xg, left, frac)
    assert torch.equal(yg.detach(), y)
    yg.sum().backward()  # each output spreads weight 1 over its two neighbours
    assert torch.allclose(xg.grad.sum(dim=2), torch.full((batch, leads), float(steps), dtype=dtype))


def _warp_map(length: int, centre: int, radius: int, step: int) -> np.ndarray:
    """Source position of each output sample for one warp, from its knots (squeeze +-step*radius into
    +-radius, stretch the next radius samples on each side into the freed space)."""
    w = (step + 1) * radius
    knots_out = [0, centre - w, centre - radius, centre + radius, centre + w, length - 1]
    knots_in = [0, centre - w, centre - step * radius, centre + step * radius, centre + w, length - 1]
    return np.interp(np.arange(length), knots_out, knots_in)


def test_dynamic_time_warp_single_warp_matches_the_knot_map():
    length = 250
    pos = aug("dynamic_time_warp", warps=1)(ramp(32, 1, length), gen(2)).numpy()[:, 0]
    for b in range(len(pos)):
        matches = [
            c for c in range(30, length - 30) if np.allclose(pos[b], _warp_map(length, c, 10, 2), atol=1e-9)
        ]
        assert len(matches) == 1


def test_dynamic_time_warp_keeps_length_ends_and_order():
    length, warps, radius, step = 250, 3, 10, 2
    dtw = aug("dynamic_time_warp")
    pos = dtw(ramp(64, 2, length), gen(6)).numpy()[:, 0]
    x = signal(64, 2, length, dtype=torch.float64)
    y = dtw(x, gen(6))
    assert y.shape == x.shape
    torch.testing.assert_close(y[..., [0, -1]], x[..., [0, -1]], rtol=0, atol=0)
    assert (np.diff(pos, axis=1) > 0).all()
    assert np.abs(pos - np.arange(length)).max() <= warps * (step - 1) * radius + 1e-9
    assert (np.abs(pos - np.arange(length)).max(axis=1) > 1).all()  # every window is warped
    for b in range(64):
        for lead in range(2):
            np.testing.assert_allclose(
                y[b, lead].numpy(), np.interp(pos[b], np.arange(length), x[b, lead].numpy()), atol=1e-12
            )


def test_random_crop_takes_a_contiguous_window_with_inclusive_last_start():
    length, size = 260, 250
    x = ramp(400, 2, length)
    y = aug("random_crop", length=size)(x, gen(0)).numpy()
    starts = y[:, 0, 0]
    np.testing.assert_array_equal(y, np.broadcast_to(starts[:, None, None] + np.arange(size), y.shape))
    assert set(starts.astype(int).tolist()) == set(range(length - size + 1))  # 0..10, 10 included
    with pytest.raises(ValueError):
        aug("random_crop", length=size)(signal(1, 1, size - 1), gen(0))


# ---------------------------------------------------------------------------------------------
# Amplitude augmentations


def test_channel_resize_gains_are_log_uniform_between_half_and_two():
    x = torch.ones(400, 12, 5, dtype=torch.float64)
    y = aug("channel_resize")(x, gen(0)).numpy()
    assert np.allclose(y, y[..., :1])  # one gain per lead
    gains = y[..., 0].ravel()
    assert gains.min() >= 0.5 and gains.max() <= 2.0
    lo, hi = math.log(0.5), math.log(2.0)
    assert stats.kstest(np.log(gains), stats.uniform(lo, hi - lo).cdf).pvalue > 1e-3
    assert len(np.unique(y[0, :, 0])) == 12  # leads of a window differ


def test_gaussian_noise_std_is_sigma():
    x = torch.zeros(64, 12, 500, dtype=torch.float64)
    noise = aug("gaussian_noise")(x, gen(0)).numpy()
    n = noise.size
    assert abs(noise.mean()) < 4 * 0.005 / math.sqrt(n)
    assert abs(noise.std() / 0.005 - 1) < 4 * math.sqrt(1 / (2 * n))


def test_em_noise_has_a_per_window_amplitude_uniform_up_to_its_maximum():
    amax = 0.5
    x = torch.zeros(2000, 2, 500, dtype=torch.float64)
    noise = aug("em_noise", max_amplitude=amax)(x, gen(0)).numpy()
    var = noise.reshape(len(noise), -1).var(axis=1)  # ~ C^2 with C ~ U(0, amax)
    assert abs(var.mean() - amax**2 / 3) < 4 * var.std() / math.sqrt(len(var))
    assert np.sqrt(var).max() <= amax * 1.05
    assert stats.kstest(np.sqrt(var) / amax, "uniform").pvalue > 1e-3


def test_em_noise_level_parameter_scales_the_noise():
    x = torch.zeros(500, 1, 400, dtype=torch.float64)
    v1 = aug("em_noise", max_amplitude=1.0)(x, gen(0)).var()
    v2 = aug("em_noise", max_amplitude=2.0)(x, gen(0)).var()
    assert float(v2 / v1) == pytest.approx(4.0, rel=1e-9)


# ---------------------------------------------------------------------------------------------
# Physiological noise


def test_baseline_wander_stays_below_half_a_hertz():
    fs, length = 100.0, 10_000  # 100 s: the components k*0.01 Hz fall exactly on FFT bins
    noise = aug("baseline_wander", fs)(torch.zeros(3, 4, length, dtype=torch.float64), gen(0)).numpy()
    power = np.abs(np.fft.rfft(noise, axis=-1)) ** 2
    freqs = np.fft.rfftfreq(length, 1 / fs)
    assert power[..., freqs >= 0.5].sum() < 1e-20 * power.sum()
    assert power[..., (freqs > 0) & (freqs < 0.5)].sum() > 0.1 * power.sum()
    # C * sum of 50 components with a_k <= 1
    assert np.abs(noise).max() <= 0.1 * 50


def test_baseline_wander_uses_seconds_from_the_sampling_rate():
    x100 = torch.zeros(2, 3, 250, dtype=torch.float64)
    x500 = torch.zeros(2, 3, 1250, dtype=torch.float64)
    n100 = aug("baseline_wander", 100.0)(x100, gen(9))
    n500 = aug("baseline_wander", 500.0)(x500, gen(9))
    torch.testing.assert_close(n500[..., ::5], n100, rtol=0, atol=1e-12)


def test_baseline_wander_differs_between_leads_unless_shared():
    x = torch.zeros(8, 12, 1000, dtype=torch.float64)
    own = aug("baseline_wander")(x, gen(0)).numpy()
    shared = aug("baseline_wander", shared_across_leads=True)(x, gen(0)).numpy()
    assert np.allclose(shared, shared[:, :1])
    corr = [abs(np.corrcoef(own[b, 0], own[b, 1])[0, 1]) for b in range(8)]
    assert min(corr) < 0.99


@pytest.mark.parametrize(
    ("fs", "mains", "expected_hz"),
    [(500.0, 50.0, [50, 100, 150]), (500.0, 60.0, [60, 120, 180]), (250.0, 50.0, [50, 100])],
)
def test_powerline_noise_energy_sits_at_mains_harmonics_below_nyquist(fs, mains, expected_hz):
    length = int(fs)  # 1 s: 1 Hz bins
    noise = aug("powerline_noise", fs, frequency_hz=mains)(
        torch.zeros(16, 12, length, dtype=torch.float64), gen(0)
    ).numpy()
    power = np.abs(np.fft.rfft(noise, axis=-1)) ** 2
    assert power[..., expected_hz].sum() > (1 - 1e-12) * power.sum()
    assert (power[..., expected_hz[0]].sum(axis=-1) > 0).all()


def test_powerline_noise_power_shows_c_applied_once():
    # Over whole periods, mean(noise^2) = C^2 g^2 sum_k a_k^2 / 2 per lead; with C ~ U(0, M),
    # g ~ U(-1, 1), a_k ~ U(0, 1): E = M^2/3 * 1/3 * 3 * 1/3 / 2 = M^2 / 18 (C twice would give ~M^4).
    amax = 0.2
    noise = aug("powerline_noise", 500.0, max_amplitude=amax)(
        torch.zeros(2000, 4, 500, dtype=torch.float64), gen(0)
    ).numpy()
    per_window = (noise**2).mean(axis=(1, 2))
    se = per_window.std() / math.sqrt(len(per_window))
    assert abs(per_window.mean() - amax**2 / 18) < 4 * se
    assert np.abs(noise).max() <= amax * 3


def test_powerline_noise_at_100_hz_is_the_nyquist_alternating_pattern():
    amax = 0.2
    noise = aug("powerline_noise", 100.0, max_amplitude=amax)(
        torch.zeros(64, 12, 250, dtype=torch.float64), gen(0)
    ).numpy()
    assert np.isfinite(noise).all()
    assert np.abs(noise).max() <= amax  # only the 50 Hz harmonic is representable at 100 Hz
    alternating = noise * (-1.0) ** np.arange(250)
    np.testing.assert_allclose(alternating, alternating[..., :1].repeat(250, axis=-1), atol=1e-12)
    assert np.abs(noise).max() > 0


def test_powerline_noise_is_sampling_rate_aware():
    n500 = aug("powerline_noise", 500.0)(torch.zeros(2, 3, 500, dtype=torch.float64), gen(4))
    n1000 = aug("powerline_noise", 1000.0)(torch.zeros(2, 3, 1000, dtype=torch.float64), gen(4))
    torch.testing.assert_close(n1000[..., ::2], n500, rtol=0, atol=1e-12)


def test_baseline_shift_is_piecewise_constant_and_shared_by_all_leads():
    fs, length = 100.0, 3000  # 30 s: up to int(0.3 * 30 + 0.5) = 9 segments
    noise = aug("baseline_shift", fs)(torch.zeros(64, 12, length, dtype=torch.float64), gen(0)).numpy()
    assert np.abs(noise).max() > 0
    for b in range(64):
        jumps = np.flatnonzero(np.abs(np.diff(noise[b], axis=-1)).max(axis=0) > 0)
        assert len(jumps) <= 2 * 9
        for lead in range(12):
            assert len(np.unique(noise[b, lead])) <= 2 * 9 + 1
        # Rank 1: one step signal times a gain per lead.
        ref = noise[b, np.argmax(np.abs(noise[b]).max(axis=1))]
        if np.abs(ref).max() > 0:
            gains = noise[b] @ ref / (ref @ ref)
            np.testing.assert_allclose(noise[b], np.outer(gains, ref), atol=1e-12)


def test_baseline_shift_segment_length_is_in_seconds():
    fs, length = 500.0, 10_000  # 20 s with 0.05 segments/s: 0 or 1 segment of ~N(3 s, 0.6 s)
    x = torch.zeros(400, 1, length, dtype=torch.float64)
    noise = aug("baseline_shift", fs, max_segments_per_s=0.05)(x, gen(0)).numpy()[:, 0]
    shifted = noise != 0
    has = shifted.any(axis=1)
    assert abs(has.mean() - 0.5) < 4 * math.sqrt(0.25 / len(has))  # count ~ U{0, 1}
    inside = has & ~shifted[:, 0] & ~shifted[:, -1]  # segments not clipped by the window
    lengths = shifted[inside].sum(axis=1)
    assert all((np.flatnonzero(row)[-1] - np.flatnonzero(row)[0] + 1) == row.sum() for row in shifted[inside])
    assert abs(lengths.mean() - 3.0 * fs) < 4 * 0.6 * fs / math.sqrt(len(lengths)) + 1
    assert abs(lengths.std() - 0.6 * fs) < 0.25 * 0.6 * fs


def test_baseline_shift_does_nothing_when_no_segment_fits():
    x = signal(4, 12, 100)  # 1 s at 100 Hz: int(0.3 + 0.5) = 0 segments
    assert torch.equal(aug("baseline_shift")(x, gen(0)), x)


# ---------------------------------------------------------------------------------------------
# Deterministic filters


@pytest.mark.parametrize("kernel", [[0.1, 0.2, 0.4, 0.2, 0.1], [0.5, 0.3, 0.2]])
def test_gaussian_blur_equals_np_convolve_per_lead(kernel):
    x = signal(3, 12, 50, dtype=torch.float64)
    y = aug("gaussian_blur", kernel=kernel)(x, None).numpy()
    half = len(kernel) // 2
    for b in range(3):
        for lead in range(12):
            padded = np.pad(x[b, lead].numpy(), half, mode="edge")
            np.testing.assert_allclose(y[b, lead], np.convolve(padded, kernel, mode="valid"), atol=1e-12)


# The reference's TNormalize constants, in its lead order (I, II, V1-V6, III, aVR, aVL, aVF).
_REF_ORDER = ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6", "III", "aVR", "aVL", "aVF"]
_REF_MEAN = [
    -0.00184586,
    -0.00130277,
    0.00017031,
    -0.00091313,
    -0.00148835,
    -0.00174687,
    -0.00077071,
    -0.00207407,
    0.00054329,
    0.00155546,
    -0.00114379,
    -0.00035649,
]
_REF_STD = [
    0.16401004,
    0.1647168,
    0.23374124,
    0.33767231,
    0.33362807,
    0.30583013,
    0.2731171,
    0.27554379,
    0.17128962,
    0.14030828,
    0.14606956,
    0.14656108,
]


@pytest.mark.parametrize("leads", [list(DEFAULT_ORDER), ["V1", "II", "aVF"], _REF_ORDER])
def test_normalize_uses_the_ptbxl_constants_of_each_lead_by_name(leads):
    params = {} if leads == list(DEFAULT_ORDER) else {"lead_names": ",".join(leads)}
    x = signal(2, len(leads), 40, dtype=torch.float64)
    y = aug("normalize", **params)(x, None).numpy()
    for i, name in enumerate(leads):
        j = _REF_ORDER.index(name)
        np.testing.assert_allclose(y[:, i], (x[:, i].numpy() - _REF_MEAN[j]) / _REF_STD[j], rtol=1e-12)


def test_normalize_custom_statistics_and_lead_count_mismatch():
    mean = [float(i) for i in range(12)]
    y = aug("normalize", mean=mean, std=[2.0] * 12, lead_names="III,I")(torch.zeros(1, 2, 3), None)
    torch.testing.assert_close(y[0, :, 0], torch.tensor([-1.0, 0.0]))  # III is index 2, I index 0
    with pytest.raises(ConfigError) as err:
        aug("normalize")(torch.zeros(1, 8, 10), None)
    assert err.value.key == "augment.normalize.lead_names"
