"""ECG augmentations: batched torch modules on (batch, leads, time), one file each, and pipelines.

`AUGMENTATIONS` maps the config names (`augment.pipeline`) to the classes; `build_pipeline` checks
each augmentation's parameters (`augment.<name>.<field>`) against its `Params` dataclass, whose
defaults are the values the paper's pretraining scripts pass. `physiological_noise` builds the
evaluation-time noise of the robustness protocol from the four maxima of a noise level.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ecg_tune.config import check_params
from ecg_tune.errors import ConfigError
from ecg_tune.plugins import AUGMENTATIONS
from ecg_tune.ssl.augment.base import Augmentation, Pipeline

__all__ = [
    "AUGMENTATIONS",
    "Augmentation",
    "Pipeline",
    "build_augmentation",
    "build_pipeline",
    "physiological_noise",
]


def build_augmentation(name: str, params: Mapping[str, Any] | None, fs: float) -> Augmentation:
    """One augmentation from its registry name and its params dict (checked, named on error)."""
    if name not in AUGMENTATIONS.names():
        raise ConfigError(
            "augment.pipeline", f"unknown augmentation {name!r}; known: {', '.join(AUGMENTATIONS.names())}"
        )
    if not fs > 0:
        raise ValueError(f"sampling rate must be > 0, got {fs}")
    cls = AUGMENTATIONS[name]
    return cls(check_params(f"augment.{name}", cls.Params, dict(params or {})), fs)


def build_pipeline(names: list[str], params: Mapping[str, Mapping[str, Any]] | None, fs: float) -> Pipeline:
    """The augmentations `names` in order, each with its entry of `params` (name -> field -> value).

    Params for an augmentation that is known but not in `names` are allowed (a search space may fix
    them while sampling the pipeline); params for an unknown name raise ConfigError `augment.<name>`.
    """
    params = params or {}
    known = AUGMENTATIONS.names()
    for name in params:
        if name not in known:
            raise ConfigError(f"augment.{name}", f"unknown augmentation; known: {', '.join(known)}")
    return Pipeline([build_augmentation(name, params.get(name), fs) for name in names])


def physiological_noise(levels: tuple[float, float, float, float], fs: float) -> Pipeline:
    """BaselineWander + PowerlineNoise + EMNoise + BaselineShift with the given maxima.

    `levels` is ordered (bw, em, pl, bs) like the noise levels L1-L6 of the robustness protocol
    (notes 6.5), e.g. L2 = (0.1, 0.5, 0.2, 1.0), which equals the pretraining noise defaults.
    """
    bw, em, pl, bs = levels
    order = [("baseline_wander", bw), ("powerline_noise", pl), ("em_noise", em), ("baseline_shift", bs)]
    return Pipeline([build_augmentation(name, {"max_amplitude": amp}, fs) for name, amp in order])
