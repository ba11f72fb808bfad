"""TimeOut: zero one random contiguous block of int(r*T) samples in all leads, r ~ U(min, max)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ecg_tune.errors import ConfigError
from ecg_tune.ssl.augment.base import Augmentation


@dataclass
class TimeOutParams:
    min_fraction: float = 0.2  # pretraining scripts pass [0.2, 0.4] (class default [0, 0.5])
    max_fraction: float = 0.4


class TimeOut(Augmentation):
    Params = TimeOutParams
    name: ClassVar[str] = "timeout"

    def __init__(self, params: TimeOutParams, fs: float):
        super().__init__(params, fs)
        if not 0.0 <= params.min_fraction <= params.max_fraction <= 1.0:
            raise ConfigError(
                f"augment.{self.name}.min_fraction",
                f"need 0 <= min_fraction <= max_fraction <= 1, got {params.min_fraction}, {params.max_fraction}",
            )

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        batch, _, length = x.shape
        dev, p = x.device, self.params
        r = p.min_fraction + (p.max_fraction - p.min_fraction) * torch.rand(
            batch, generator=generator, device=dev, dtype=torch.float64
        )
        size = (r * length).long()
        # Start uniform over [0, T-size] inclusive (the reference excludes the last start).
        u = torch.rand(batch, generator=generator, device=dev, dtype=torch.float64)
        start = torch.minimum((u * (length - size + 1)).long(), length - size)
        t = torch.arange(length, device=dev)
        block = (t >= start[:, None]) & (t < (start + size)[:, None])  # (B, T), same for every lead
        # Multiplying by a 0/1 mask is several times faster on CPU than masked_fill with a broadcast
        # mask; inputs are finite signals, so 0 * x is 0.
        return x * (~block).to(x.dtype)[:, None, :]
