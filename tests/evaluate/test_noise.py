"""Noise levels of the robustness protocol: the added noise has the documented magnitudes.

The composite (BW + EM + PL + BS) is checked through each component: a level tuple with only one
non-zero maximum isolates it. Expected values follow from the component definitions (paper notes
§5, the augmentation docstrings), with C ~ U(0, max) so E[C^2] = max^2 / 3.
"""

from __future__ import annotations

import pytest
import torch

from ecg_tune.errors import ConfigError
from ecg_tune.evaluate.noise import CLEAN, NOISE_LEVELS, add_noise, noise_level

FS = 100.0
B, L, T = 3000, 4, 250  # 2.5 s windows at 100 Hz, as in the protocol


def _noise(level: tuple[float, float, float, float], seed: int = 0) -> torch.Tensor:
    x = torch.zeros(B, L, T)
    return add_noise(x, level, FS, torch.Generator().manual_seed(seed)).double()


def test_levels_are_the_documented_table() -> None:
    assert NOISE_LEVELS["L1"] == (0.05, 0.25, 0.1, 0.5)
    assert NOISE_LEVELS["L2"] == (0.1, 0.5, 0.2, 1.0)
    assert NOISE_LEVELS["L6"] == (0.3, 2.0, 0.5, 3.0)
    assert list(NOISE_LEVELS) == [f"L{i}" for i in range(1, 7)]
    for component in range(4):  # every component is non-decreasing from L1 to L6
        values = [NOISE_LEVELS[f"L{i}"][component] for i in range(1, 7)]
        assert values == sorted(values)


def test_clean_level_and_bad_levels() -> None:
    x = torch.randn(2, 3, 50)
    assert add_noise(x, CLEAN, FS) is x
    with pytest.raises(ConfigError):
        noise_level("L7")
    with pytest.raises(ConfigError):
        noise_level((0.1, 0.2, 0.3))  # type: ignore[arg-type]


def test_em_component_variance_is_max_squared_over_three() -> None:
    em = 0.5
    n = _noise((0.0, em, 0.0, 0.0))
    # N(0, C^2) per sample, C ~ U(0, em) per window: E[n^2] = em^2 / 3.
    assert (n**2).mean().item() == pytest.approx(em**2 / 3, rel=0.04)
    # Per window the sample std is C <= em.
    assert n.std(dim=(1, 2)).max().item() <= em * 1.05


def test_baseline_wander_component_magnitude() -> None:
    bw = 0.1
    n = _noise((bw, 0.0, 0.0, 0.0))
    terms = 50  # components at 0, 0.01, ..., 0.49 Hz (cutoff 0.5 Hz)
    # |C sum_k a_k cos(.)| <= bw * sum_k a_k <= bw * 50
    assert n.abs().max().item() <= bw * terms
    # E[(C sum a_k cos(w_k t + phi_k))^2] = E[C^2] * K * E[a^2] * E[cos^2] = bw^2/3 * 50 * 1/3 * 1/2
    assert (n**2).mean().item() == pytest.approx(bw**2 / 3 * terms / 6, rel=0.06)
    # Slow: below 0.5 Hz, so neighbouring samples (10 ms apart) barely differ.
    assert (n[..., 1:] - n[..., :-1]).abs().max().item() < 0.05 * n.abs().max().item()


def test_powerline_component_magnitude() -> None:
    pl = 0.4
    n = _noise((0.0, 0.0, pl, 0.0))
    # At 100 Hz only the 50 Hz harmonic is representable (at Nyquist): C g a1 (-1)^t cos(phi),
    # |.| <= pl, and E[.^2] = E[C^2] E[g^2] E[a^2] E[cos^2] = pl^2/3 * 1/3 * 1/3 * 1/2.
    assert n.abs().max().item() <= pl
    assert (n**2).mean().item() == pytest.approx(pl**2 / 54, rel=0.06)
    # Alternating sign pattern: n[t+1] = -n[t].
    torch.testing.assert_close(n[..., 1:], -n[..., :-1], atol=1e-6, rtol=0)


def test_baseline_shift_component_is_a_step() -> None:
    bs = 2.0
    n = _noise((0.0, 0.0, 0.0, bs))
    # At most one segment per 2.5 s window (int(0.3 * 2.5 + 0.5) = 1): each lead's noise takes at most
    # two values, zero and C g a, and leads of a window are proportional to one step shape.
    step = n.diff(dim=-1).abs() > 1e-9
    assert step.sum(dim=-1).max().item() <= 2
    nonzero = n.abs().amax(dim=(1, 2)) > 0
    # No segment in about half the windows (count ~ U{0, 1}).
    assert nonzero.double().mean().item() == pytest.approx(0.5, abs=0.05)
    # E[n^2] = E[C^2] E[g^2] E[a^2] P(segment) P(covered) with g = +-N(1, 1) (E[g^2] = 2), a ~ U(-1, 1):
    # bs^2/3 * 2 * 1/3 * 1/2 * P(covered), and a ~3 s segment covers most of a 2.5 s window.
    bound = bs**2 / 3 * 2 / 3 / 2
    assert 0.6 * bound <= (n**2).mean().item() <= 1.05 * bound


def test_composite_is_the_sum_of_independent_components() -> None:
    level = NOISE_LEVELS["L3"]
    bw, em, pl, _ = level
    n_all = _noise(level, seed=1)
    n_bs = _noise((0.0, 0.0, 0.0, level[3]), seed=2)
    # Zero-mean independent components: mean squares add.
    expected = bw**2 / 3 * 50 / 6 + em**2 / 3 + pl**2 / 54 + (n_bs**2).mean().item()
    assert (n_all**2).mean().item() == pytest.approx(expected, rel=0.08)


def test_noise_is_seeded_and_fresh_per_window() -> None:
    x = torch.zeros(8, 2, T)
    a = add_noise(x, "L2", FS, torch.Generator().manual_seed(5))
    b = add_noise(x, "L2", FS, torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a[0], a[1])  # a fresh draw per window
    assert a.shape == x.shape and a.dtype == x.dtype
