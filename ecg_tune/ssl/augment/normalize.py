"""Normalize: per-lead z-score (x - mean) / std, by default with the fixed PTB-XL statistics.

The reference (`TNormalize`, notes 2.3) uses one set of PTB-XL constants for every dataset, listed in
the paper's lead order (I, II, V1-V6, III, aVR, aVL, aVF). Here `mean` and `std` are always listed
in `DEFAULT_ORDER` (I, II, III, aVR, aVL, aVF, V1-V6) and `lead_names` says which leads the input
holds and in which order (empty = all 12 in DEFAULT_ORDER); statistics are picked by lead name, so
lead subsets and other orders are normalised with the right constants. Deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ecg_tune.data.leads import DEFAULT_ORDER, lead_order
from ecg_tune.data.normalization import PTBXL_MEAN, PTBXL_STD
from ecg_tune.errors import ConfigError
from ecg_tune.ssl.augment.base import Augmentation

# The constants live with the data layer's per-lead z-scoring (one home, also used by data.normalize).
__all__ = ["PTBXL_MEAN", "PTBXL_STD", "Normalize", "NormalizeParams"]


@dataclass
class NormalizeParams:
    mean: list[float] = field(default_factory=lambda: list(PTBXL_MEAN))  # 12 values, DEFAULT_ORDER
    std: list[float] = field(default_factory=lambda: list(PTBXL_STD))  # 12 values, DEFAULT_ORDER
    lead_names: list[str] = field(default_factory=list)  # leads of the input in order; [] = DEFAULT_ORDER


class Normalize(Augmentation):
    Params = NormalizeParams
    name: ClassVar[str] = "normalize"

    def __init__(self, params: NormalizeParams, fs: float):
        super().__init__(params, fs)
        key = f"augment.{self.name}"
        for field_name in ("mean", "std"):
            values = getattr(params, field_name)
            if len(values) != len(DEFAULT_ORDER):
                raise ConfigError(
                    f"{key}.{field_name}",
                    f"needs {len(DEFAULT_ORDER)} values in DEFAULT_ORDER, got {len(values)}",
                )
        if min(params.std) <= 0:
            raise ConfigError(f"{key}.std", "every std must be > 0")
        try:
            names = lead_order(params.lead_names) if params.lead_names else DEFAULT_ORDER
        except ConfigError as err:
            raise ConfigError(f"{key}.lead_names", err.reason) from None
        pick = [DEFAULT_ORDER.index(n) for n in names]
        self.lead_names = names
        mean = torch.tensor(params.mean, dtype=torch.float64)[pick]
        std = torch.tensor(params.std, dtype=torch.float64)[pick]
        # Plain attributes, moved to the input's device and dtype per call (12 numbers).
        self.mean: torch.Tensor = mean.view(1, -1, 1)
        self.std: torch.Tensor = std.view(1, -1, 1)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.shape[1] != len(self.lead_names):
            raise ConfigError(
                f"augment.{self.name}.lead_names",
                f"input has {x.shape[1]} leads but lead_names lists {len(self.lead_names)}: {', '.join(self.lead_names)}",
            )
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        mean = self.mean.to(device=x.device, dtype=work.dtype)
        std = self.std.to(device=x.device, dtype=work.dtype)
        return ((work - mean) / std).to(x.dtype)
