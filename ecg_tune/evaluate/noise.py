"""Physiological noise levels of the robustness protocol (paper notes §6.5) and how to apply them.

Each level gives the maxima (bw, em, pl, bs) of BaselineWander, EMNoise, PowerlineNoise and
BaselineShift in mV (the amplitude C of each component is drawn from U(0, max) per window). The
model is trained on clean data; only evaluation windows are noised, with a fresh draw per window.
"""

from __future__ import annotations

import torch

from ecg_tune.errors import ConfigError

NoiseLevel = tuple[float, float, float, float]  # (baseline wander, EM, powerline, baseline shift) maxima

CLEAN = "L0"  # the clean reference point of the robustness curve (no noise)

NOISE_LEVELS: dict[str, NoiseLevel] = {
    "L1": (0.05, 0.25, 0.1, 0.5),
    "L2": (0.1, 0.5, 0.2, 1.0),  # = the noise-augmentation defaults used in pretraining
    "L3": (0.1, 1.0, 0.2, 2.0),
    "L4": (0.2, 1.0, 0.4, 2.0),
    "L5": (0.2, 1.5, 0.4, 2.5),
    "L6": (0.3, 2.0, 0.5, 3.0),
}


def noise_level(level: str | NoiseLevel) -> NoiseLevel:
    """The (bw, em, pl, bs) maxima of a named level, or a tuple passed through after checking it."""
    if isinstance(level, str):
        if level == CLEAN:
            return (0.0, 0.0, 0.0, 0.0)
        if level not in NOISE_LEVELS:
            known = ", ".join([CLEAN, *NOISE_LEVELS])
            raise ConfigError("evaluation.noise_levels", f"unknown noise level {level!r}; known: {known}")
        return NOISE_LEVELS[level]
    values = tuple(float(v) for v in level)
    if len(values) != 4 or any(v < 0 for v in values):
        raise ConfigError(
            "evaluation.noise_levels",
            f"a noise level is 4 non-negative maxima (bw, em, pl, bs), got {level!r}",
        )
    return values  # type: ignore[return-value]


def add_noise(
    windows: torch.Tensor, level: str | NoiseLevel, fs: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """`windows` (B, leads, T) in mV plus BW + EM + PL + BS noise of `level`, one draw per window.

    Noise is added to millivolt signals, before any z-score normalisation (the reference's noisy
    loader skipped `--normalize` altogether, notes §8.8; here the model normalises its own input).
    """
    maxima = noise_level(level)
    if not any(maxima):
        return windows
    from ecg_tune.ssl.augment import physiological_noise  # lazily: only the noise protocol needs it

    pipeline = physiological_noise(levels=maxima, fs=fs).to(windows.device)
    with torch.no_grad():
        return pipeline(windows, generator)
