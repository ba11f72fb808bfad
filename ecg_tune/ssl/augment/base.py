"""Common signature of every ECG augmentation: a batched torch module on (batch, leads, time)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn


class Augmentation(nn.Module):
    """Subclasses set `Params` (a dataclass with the paper's defaults) and implement `forward`.

    `forward(x, generator)` takes (B, L, T) and returns the same shape, dtype and device. All
    randomness is drawn per sample from `generator` (a torch.Generator on x's device), so a pipeline
    is reproducible from a seed and runs on the trainer's device.
    """

    Params: ClassVar[type]

    def __init__(self, params: Any, fs: float):
        super().__init__()
        self.params = params
        self.fs = float(fs)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"{self.params}, fs={self.fs:g}"


class Pipeline(nn.Module):
    """Augmentations applied in order, each with probability 1 (as in the paper)."""

    def __init__(self, steps: list[Augmentation]):
        super().__init__()
        self.steps = nn.ModuleList(steps)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for step in self.steps:
            x = step(x, generator)
        return x
