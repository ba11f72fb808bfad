"""Synthetic signals: beats, waves and per-electrode noise of a cohort's records, as 12-lead mV arrays."""

from __future__ import annotations

import numpy as np

from ecg_tune.data.synthetic_model import (
    _ELECTRODES,
    _F_WAVE,
    _LB_1,
    _LB_2,
    _P_LA,
    _P_RA,
    _Q_SEPT,
    _R_MAIN,
    _R_PRIME,
    _S_TERM,
    _ST_DIR,
    _T_LBBB,
    _T_NORM,
    AFIB,
    ALIAS_RESIDUE,
    DOWER,
    SBRAD,
    ST_CODES,
    STACH,
    Cohort,
)

# ---------------------------------------------------------------------------------------------------
# Signals


def synthesize(
    cohort: Cohort, rows: np.ndarray, seed: int, chunk_no: int, fs: float, duration_s: float, *, noise: bool = True
) -> np.ndarray:
    """Signals of cohort records `rows` (one chunk) → float64 (B, 12, T) mV in DEFAULT_ORDER."""
    rng = np.random.default_rng([seed, 1, chunk_no])
    n_samples = int(round(duration_s * fs))
    rhythm = cohort.rhythm[rows]
    m = {k: v[cohort.patient[rows]] for k, v in cohort.morph.items()}
    b = len(rows)

    beats, rr_prev, beat_amp, f_resp, phi_resp = _beat_times(rng, rhythm, duration_s)
    vcg = np.zeros((3, b, n_samples + 2 * _pad(fs)))
    _add_waves(vcg, *_qrs_and_p(rng, m, rhythm == AFIB, beats, beat_amp), beats, fs)
    _add_waves(vcg, *_st_and_t(rng, m, cohort.st_size[rows], rr_prev, beat_amp), beats, fs)
    vcg = vcg[:, :, _pad(fs) : _pad(fs) + n_samples].transpose(1, 0, 2)  # (B, 3, T)
    t = np.arange(n_samples) / fs
    _add_f_waves(rng, vcg, rhythm == AFIB, t)

    channels = np.einsum("lj,bjt->blt", DOWER, vcg)  # I, II, V1..V6
    # Amplifier gain and V-electrode placement differences, drawn before noise so that noise=False
    # keeps every other draw the same.
    gains = np.concatenate([rng.normal(1.0, 0.02, (b, 2)), rng.normal(1.0, 0.06, (b, 6))], axis=1)
    if noise:
        nrng = np.random.default_rng([seed, 2, chunk_no])
        electrodes = _electrode_noise(nrng, b, t, fs, f_resp, phi_resp)
        channels += np.einsum("le,bet->blt", _ELECTRODES, electrodes)
    channels *= gains[:, :, None]
    return leads_from_channels(channels)


def leads_from_channels(channels: np.ndarray) -> np.ndarray:
    """(..., 8, T) recorded I, II, V1..V6 → (..., 12, T) in DEFAULT_ORDER; limb leads derived exactly."""
    i, ii = channels[..., 0, :], channels[..., 1, :]
    out = np.empty(channels.shape[:-2] + (12, channels.shape[-1]), dtype=channels.dtype)
    out[..., 0, :] = i
    out[..., 1, :] = ii
    out[..., 2, :] = ii - i  # III
    out[..., 3, :] = -(i + ii) / 2  # aVR
    out[..., 4, :] = i - ii / 2  # aVL
    out[..., 5, :] = ii - i / 2  # aVF
    out[..., 6:, :] = channels[..., 2:, :]
    return out


def _pad(fs: float) -> int:
    # Beats are kept from 1.2 s before the record to 0.6 s after it; their waves reach at most ~1 s
    # further, so 2.5 s of padding on each side holds every wave whole.
    return int(np.ceil(2.5 * fs))


_MIN_RR = 0.25


_Arrays = tuple[np.ndarray, ...]


def _beat_times(rng: np.random.Generator, rhythm: np.ndarray, duration_s: float) -> _Arrays:
    """QRS onset times (B, K) (NaN where unused), previous RR (B, K), beat amplitude (B, K)."""
    b = len(rhythm)
    # Rates keep a small gap to the 60/100 bpm limits so that a 10 s R-peak count agrees with the code.
    hr = np.clip(rng.normal(74.0, 10.0, b), 62.0, 98.0)
    hr = np.where(rhythm == SBRAD, rng.uniform(38.0, 56.0, b), hr)
    hr = np.where(rhythm == STACH, rng.uniform(103.0, 150.0, b), hr)
    hr = np.where(rhythm == AFIB, rng.uniform(55.0, 140.0, b), hr)
    afib = rhythm == AFIB
    rr0 = 60.0 / hr
    k = int(np.ceil((duration_s + 4.0) / _MIN_RR))
    t_nom = np.arange(k) * rr0[:, None]
    f_resp, phi_resp = rng.uniform(0.15, 0.4, b), rng.uniform(0, 2 * np.pi, b)
    # Sinus rhythm: respiratory sinus arrhythmia (weaker at high rates) + Mayer waves + jitter.
    a_rsa = rng.uniform(0.01, 0.06, b) * np.clip(rr0 / 0.8, 0.3, 1.2)
    a_lf, phi_lf = rng.uniform(0.0, 0.02, b), rng.uniform(0, 2 * np.pi, b)
    wobble = (
        a_rsa[:, None] * np.sin(2 * np.pi * f_resp[:, None] * t_nom + phi_resp[:, None])
        + a_lf[:, None] * np.sin(2 * np.pi * 0.1 * t_nom + phi_lf[:, None])
        + 0.008 * rng.standard_normal((b, k))
    )
    rr = rr0[:, None] * (1 + wobble)
    # AF: irregularly irregular, independent lognormal intervals with the same mean.
    cv = rng.uniform(0.08, 0.28, b)[:, None]
    rr_af = rr0[:, None] * np.exp(cv * rng.standard_normal((b, k)) - cv**2 / 2)
    rr = np.where(afib[:, None], rr_af, rr)
    # Premature beats in some sinus records: an early beat, then a compensatory pause (rate unchanged).
    early = (rng.random(b) < 0.12)[:, None] & ~afib[:, None] & (rng.random((b, k)) < 0.08)
    early[:, -1] = False
    lost = np.where(early, rr * rng.uniform(0.25, 0.4, (b, k)), 0.0)
    rr = rr - lost
    rr[:, 1:] += lost[:, :-1]
    rr = np.maximum(rr, _MIN_RR)
    start = -1.0 - rng.uniform(0.0, 1.0, b) * rr0
    beats = start[:, None] + np.concatenate([np.zeros((b, 1)), np.cumsum(rr[:, :-1], axis=1)], axis=1)
    rr_prev = np.concatenate([rr0[:, None], rr[:, :-1]], axis=1)
    beats = np.where((beats >= -1.2) & (beats <= duration_s + 0.6), beats, np.nan)
    beat_amp = 1 + 0.04 * np.sin(2 * np.pi * f_resp[:, None] * beats + phi_resp[:, None]) + 0.01 * rng.standard_normal((b, k))
    return beats, rr_prev, beat_amp, f_resp, phi_resp


def _qrs_and_p(
    rng: np.random.Generator, m: dict[str, np.ndarray], afib: np.ndarray, beats: np.ndarray, beat_amp: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Narrow waves P1, P2, Q, R, S, X: offsets/sigmas/amplitudes (B, K, 6), vectors (B, 6, 3)."""
    b, k = beats.shape
    qs = m["qrs_width"] * np.exp(rng.normal(0.0, 0.03, b))  # per-record drift of the patient's QRS
    gain = m["wave_gain"] * np.exp(rng.normal(0.0, 0.05, (b, 5)))
    scale = m["scale"] * np.exp(rng.normal(0.0, 0.05, b))
    delay, clbbb, lvh = m["rbbb_delay"], m["clbbb"], m["lvh_gain"]

    pr = m["pr"] + rng.normal(0.0, 0.005, b)
    off = np.zeros((b, k, 6))
    off[:, :, 0] = -pr[:, None] + 0.030 + rng.normal(0.0, 0.003, (b, k))
    off[:, :, 1] = off[:, :, 0] + 0.035
    off[:, :, 2:6] = (np.array([0.012, 0.045, 0.078, 0.0]) * qs[:, None])[:, None, :]
    off[:, :, 5] = np.where(clbbb, 0.105, 0.045 * qs + delay)[:, None]  # CRBBB R' / CLBBB notch
    off[:, :, 3] = np.where(clbbb, 0.05, off[:, 0, 3])[:, None]
    sig = np.zeros((b, 6))
    sig[:, 0], sig[:, 1] = 0.020, 0.022
    sig[:, 2:5] = np.array([0.007, 0.011, 0.010]) * qs[:, None]
    sig[:, 3] = np.where(clbbb, 0.02, sig[:, 3] * (1 + 0.12 * (lvh - 1)))
    sig[:, 4] *= 1 + 0.4 * delay / 0.09  # the terminal S broadens with the right-bundle delay
    sig[:, 5] = np.where(clbbb, 0.022, 0.012 + 0.1 * delay)

    # LVH: more voltage and a more leftward-posterior main force.
    r_dir = _R_MAIN + (lvh - 1)[:, None] * [0.12, -0.18, 0.3]
    r_dir /= np.linalg.norm(r_dir, axis=1, keepdims=True)
    vec = np.zeros((b, 6, 3))
    vec[:, 0] = _P_RA * 0.09
    vec[:, 1] = _P_LA * 0.09
    vec[:, 0:2] *= (gain[:, 0] * ~afib)[:, None, None]
    vec[:, 2] = _Q_SEPT * (0.25 * gain[:, 2] * ~clbbb)[:, None]
    vec[:, 3] = np.where(clbbb[:, None], _LB_1 * 1.1, r_dir * 1.4 * lvh[:, None]) * gain[:, 2:3]
    vec[:, 4] = _S_TERM * (0.45 * gain[:, 3] * lvh * ~clbbb)[:, None]
    vec[:, 5] = np.where(clbbb[:, None], _LB_2 * 1.2 * gain[:, 2:3], _R_PRIME * m["r_prime"][:, None])
    vec *= scale[:, None, None]
    vec = np.einsum("bij,bwj->bwi", m["rotation"], vec)
    sigmas = np.broadcast_to(sig[:, None, :], (b, k, 6))
    return off, sigmas, np.broadcast_to(beat_amp[:, :, None], (b, k, 6)), vec


def _st_and_t(
    rng: np.random.Generator, m: dict[str, np.ndarray], st_size: np.ndarray, rr_prev: np.ndarray, beat_amp: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Broad waves T1, T2, ST1..ST3: offsets/sigmas/amplitudes (B, K, 5), vectors (B, 5, 3)."""
    b, k = rr_prev.shape
    delay, clbbb = m["rbbb_delay"], m["clbbb"]
    qtc = m["qtc"] + rng.normal(0.0, 0.005, b)
    t_peak = qtc[:, None] * np.sqrt(rr_prev) - 0.075  # Bazett: QT follows the preceding RR
    stretch = np.clip(np.sqrt(rr_prev), 0.7, 1.25)
    # J point = end of QRS: after the R' in RBBB, after the notch in LBBB.
    rbbb_end = 0.045 * m["qrs_width"] + delay + 2 * (0.012 + 0.1 * delay)
    j_point = np.where(clbbb, 0.15, np.maximum(0.095 * m["qrs_width"], np.where(delay > 0, rbbb_end, 0)))[:, None]
    span = np.maximum(t_peak - j_point, 0.06)
    off = np.stack([t_peak - 0.03 * stretch, t_peak + 0.01 * stretch]
                   + [j_point + span * f for f in (0.1, 0.5, 0.9)], axis=-1)
    sig = np.stack([0.05 * stretch, 0.032 * stretch] + [0.3 * span] * 3, axis=-1)

    t_gain = m["wave_gain"][:, 4] * m["scale"] * np.exp(rng.normal(0.0, 0.05, b))
    t_vec = _T_NORM * 0.35 + (delay / 0.09)[:, None] * [0.03, 0.0, 0.1]  # secondary T change of RBBB
    t_vec = np.where(m["lvh_strain"][:, None], -0.7 * t_vec, t_vec)
    t_vec = np.where(clbbb[:, None], _T_LBBB * 0.45, t_vec) * t_gain[:, None]
    # 1.8 = height of the three-Gaussian plateau per unit amplitude.
    st_vec = (st_size @ np.stack([_ST_DIR[c] for c in ST_CODES]) + m["st_rest"]) / 1.8
    vec = np.stack([t_vec * 0.7, t_vec * 0.5, st_vec, st_vec, st_vec], axis=1)
    vec = np.einsum("bij,bwj->bwi", m["rotation"], vec)
    return off, sig, np.broadcast_to(beat_amp[:, :, None], (b, k, 5)), vec


def _add_waves(
    acc: np.ndarray, off: np.ndarray, sig: np.ndarray, amp: np.ndarray, vec: np.ndarray, beats: np.ndarray, fs: float
) -> None:
    """Add Gaussian waves to `acc` (3, B, padded T): each wave is evaluated on its own ±4σ samples
    only and scattered with bincount, which keeps the cost independent of the record length."""
    _, b, length = acc.shape
    rec, beat = np.nonzero(~np.isnan(beats))
    centres = beats[rec, beat][:, None] + off[rec, beat]  # (M, W)
    s = sig[rec, beat]
    half = int(np.ceil(4 * s.max() * fs)) if s.size else 0
    n = np.rint(centres * fs).astype(np.int64)[..., None] + np.arange(-half, half + 1)  # (M, W, L)
    g = amp[rec, beat][..., None] * np.exp(-0.5 * ((n / fs - centres[..., None]) / s[..., None]) ** 2)
    # Samples that fall outside the padded record pile up on its edge samples, which are cropped.
    flat = (rec[:, None, None] * length + np.clip(n + _pad(fs), 0, length - 1)).ravel()
    for axis in range(3):
        w = (g * vec[rec, :, axis][:, :, None]).ravel()
        acc[axis] += np.bincount(flat, w, minlength=b * length).reshape(b, length)


def _add_f_waves(rng: np.random.Generator, vcg: np.ndarray, afib: np.ndarray, t: np.ndarray) -> None:
    """Fibrillatory waves (4-9 Hz, drifting in frequency and amplitude) on AFIB records."""
    b = len(afib)
    f0 = rng.uniform(4.0, 9.0, b)
    amp = rng.uniform(0.03, 0.12, b)
    drift_f, drift_phase = rng.uniform(0.05, 0.2, b), rng.uniform(0, 2 * np.pi, (b, 3))
    harmonic = rng.uniform(0.1, 0.4, b)
    rows = np.flatnonzero(afib)
    if not rows.size:
        return
    r = rows[:, None]
    freq_dev = 0.6 * np.sin(2 * np.pi * drift_f[r] * t + drift_phase[r, 0])
    phase = 2 * np.pi * (f0[r] * t + np.cumsum(freq_dev, axis=1) * (t[1] - t[0] if len(t) > 1 else 0.0))
    wave = np.sin(phase) + harmonic[r] * np.sin(2 * phase + drift_phase[r, 1])
    wave *= amp[r] * (1 + 0.3 * np.sin(2 * np.pi * 0.2 * t + drift_phase[r, 2]))
    vcg[rows] += _F_WAVE[None, :, None] * wave[:, None, :]


def _electrode_noise(
    rng: np.random.Generator, b: int, t: np.ndarray, fs: float, f_resp: np.ndarray, phi_resp: np.ndarray
) -> np.ndarray:
    """Noise potentials (B, 9, T) at RA, LA, LL, V1..V6 in mV."""
    n_samples = len(t)
    # Smooth components share per-record frequencies; each electrode gets its own amplitude and phase.
    f_drift = rng.uniform(0.05, 0.3, b)
    f_line = rng.choice([50.0, 60.0], b) + rng.uniform(-0.05, 0.05, b)
    basis = np.empty((b, 6, n_samples))
    for j, (f, phi) in enumerate(((f_resp, phi_resp), (f_drift, 0.0), (f_line, 0.0))):
        arg = 2 * np.pi * np.asarray(f)[:, None] * t + np.asarray(phi).reshape(-1, 1)
        basis[:, 2 * j], basis[:, 2 * j + 1] = np.sin(arg), np.cos(arg)
    wander = rng.uniform(0.0, 1.0, b) ** 2  # most records are steady, a few wander a lot
    line = rng.uniform(0.0, 1.0, b) ** 2 * np.where(f_line >= fs / 2, ALIAS_RESIDUE, 1.0)
    size = np.stack([0.06 * wander, 0.15 * wander, 0.02 * line], axis=1)  # (B, 3) mV
    amp = rng.uniform(0.0, 1.0, (b, 9, 3)) * size[:, None, :]
    phase = rng.uniform(0.0, 2 * np.pi, (b, 9, 3))
    coef = np.stack([amp * np.cos(phase), amp * np.sin(phase)], axis=-1).reshape(b, 9, 6)
    noise = np.einsum("bec,bct->bet", coef, basis)
    # Muscle / electrode noise: white, of record-varying size (most records clean).
    em = 0.003 + 0.03 * rng.uniform(0.0, 1.0, b) ** 3
    noise += rng.standard_normal((b, 9, n_samples)) * (em[:, None] * rng.uniform(0.5, 1.5, (b, 9)))[:, :, None]
    # Electrode motion: in some records one electrode jumps and relaxes back (recorder high-pass).
    moved = np.flatnonzero(rng.random(b) < 0.1)
    which = rng.integers(0, 9, b)
    t0, jump, tau = rng.uniform(0.0, t[-1] + 1e-9, b), rng.normal(0.0, 0.4, b), rng.uniform(0.2, 1.0, b)
    if moved.size:
        r = moved[:, None]
        dt = t - t0[r]
        noise[moved, which[moved]] += jump[r] * np.where(dt >= 0, np.exp(-np.maximum(dt, 0) / tau[r]), 0.0)
    return noise
