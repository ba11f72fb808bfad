"""Per-lead z-scoring statistics: the paper's fixed PTB-XL constants (paper notes §2.3).

`data.normalize` z-scores every lead with ONE fixed set of PTB-XL statistics, whatever the dataset, as
the reference does (`TNormalize`, `main_cpc_lightning.py --normalize`): an encoder then sees the same
input scale in pretraining, in evaluation and in any later use, and statistics never depend on which
corpus happened to come first. The constants are given in the reference's lead order and picked by
lead name, so lead subsets and other orders get the right values.

The per-lead z-score itself has its home here too: `lead_stats` (statistics as float32, a flat lead's
std 0 replaced by 1 so that it is only centred) and `normalize` (numpy windows). The torch modules
that apply it on the device (evaluate/heads.Normalize, the `normalize` augmentation, the exported
embedder) take their statistics from `lead_stats`'s contract.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ecg_tune.data.leads import DEFAULT_ORDER, PAPER_ORDER
from ecg_tune.errors import ConfigError

# Exact constants of the reference code, in PAPER_ORDER (mV).
_PAPER_MEAN = (
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
)
_PAPER_STD = (
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
)
PTBXL_MEAN: tuple[float, ...] = tuple(_PAPER_MEAN[PAPER_ORDER.index(n)] for n in DEFAULT_ORDER)
PTBXL_STD: tuple[float, ...] = tuple(_PAPER_STD[PAPER_ORDER.index(n)] for n in DEFAULT_ORDER)


def ptbxl_stats(lead_names: Sequence[str]) -> tuple[list[float], list[float]]:
    """(mean, std) in mV of the PTB-XL constants for `lead_names`, in that order."""
    unknown = [n for n in lead_names if n not in DEFAULT_ORDER]
    if unknown:
        raise ConfigError(
            "data.normalize",
            f"the fixed PTB-XL statistics cover the 12 standard leads; no value for {', '.join(unknown)}",
        )
    pick = [DEFAULT_ORDER.index(n) for n in lead_names]
    return [PTBXL_MEAN[i] for i in pick], [PTBXL_STD[i] for i in pick]


def lead_stats(mean: Sequence[float] | np.ndarray, std: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-lead (mean, std) as float32 vectors; a flat lead (std 0) gets std 1, so it is only centred."""
    mean = np.asarray(mean, dtype=np.float32).reshape(-1)
    std = np.asarray(std, dtype=np.float32).reshape(-1)
    return mean, np.where(std > 0, std, np.float32(1.0)).astype(np.float32)


def normalize(windows: np.ndarray, mean: Sequence[float] | np.ndarray, std: Sequence[float] | np.ndarray) -> np.ndarray:
    """Per-lead z-score of (..., leads, time) windows → float32. A zero std leaves that lead centred only."""
    mean, safe = lead_stats(mean, std)
    if mean.shape[0] != windows.shape[-2] or safe.shape[0] != windows.shape[-2]:
        raise ValueError(f"mean/std have {mean.shape[0]}/{safe.shape[0]} leads, windows {windows.shape[-2]}")
    return ((windows - mean[:, None]) / safe[:, None]).astype(np.float32, copy=False)
