"""ChannelResize: multiply each lead by its own log-uniform gain exp(U(log min_gain, log max_gain))."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from ecg_tune.errors import ConfigError
from ecg_tune.ssl.augment.base import Augmentation


@dataclass
class ChannelResizeParams:
    min_gain: float = 0.5  # pretraining scripts pass (0.5, 2) (torch class default (0.33, 3))
    max_gain: float = 2.0


class ChannelResize(Augmentation):
    Params = ChannelResizeParams
    name: ClassVar[str] = "channel_resize"

    def __init__(self, params: ChannelResizeParams, fs: float):
        super().__init__(params, fs)
        if not 0 < params.min_gain <= params.max_gain:
            raise ConfigError(
                f"augment.{self.name}.min_gain",
                f"need 0 < min_gain <= max_gain, got {params.min_gain}, {params.max_gain}",
            )

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        batch, leads, _ = x.shape
        lo, hi = math.log(self.params.min_gain), math.log(self.params.max_gain)
        u = torch.rand(batch, leads, 1, generator=generator, device=x.device, dtype=work.dtype)
        return (work * torch.exp(lo + (hi - lo) * u)).to(x.dtype)
