"""RandomCrop: take `length` consecutive samples at a per-window uniform start. Changes T.

The start is uniform over [0, T - length] inclusive; the reference never picks the last start
(notes 8.7). Every lead of a window is cut at the same start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ecg_tune.errors import ConfigError
from ecg_tune.ssl.augment.base import Augmentation, uniform_start


@dataclass
class RandomCropParams:
    length: int = 250  # samples: 2.5 s at 100 Hz, the windows of the paper


class RandomCrop(Augmentation):
    Params = RandomCropParams
    name: ClassVar[str] = "random_crop"

    def __init__(self, params: RandomCropParams, fs: float):
        super().__init__(params, fs)
        if params.length < 1:
            raise ConfigError(f"augment.{self.name}.length", f"must be >= 1, got {params.length}")

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        batch, leads, length = x.shape
        size = self.params.length
        if size > length:
            raise ValueError(
                f"random_crop: window of {length} samples is shorter than the crop length {size}"
            )
        start = uniform_start(batch, length, size, x.device, generator)
        index = start[:, None] + torch.arange(size, device=x.device)
        return torch.gather(x, 2, index[:, None, :].expand(batch, leads, size))
