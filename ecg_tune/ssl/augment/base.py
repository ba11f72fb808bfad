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

    def forward_(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """`forward` for an x that the caller owns and no longer needs: may write the result into x.

        Same random draws and the same result as `forward`. `Pipeline` calls it on the tensors that
        its own earlier steps returned, never on its input. The default is `forward` (a new tensor);
        pointwise augmentations override it to save an allocation and a pass over the batch.
        """
        return self.forward(x, generator)

    def extra_repr(self) -> str:
        return f"{self.params}, fs={self.fs:g}"


class Pipeline(nn.Module):
    """Augmentations applied in order, each with probability 1 (as in the paper).

    The input is never modified. A step whose input is a fresh tensor that an earlier step returned
    (not sharing memory with the pipeline's input, contiguous, outside autograd) runs as
    `step.forward_`, which may work in place (e.g. TimeOut after RandomResizedCrop: a mask multiply
    into the crop's output instead of a second batch-sized tensor); the result is the same as
    calling the steps one after the other.
    """

    def __init__(self, steps: list[Augmentation]):
        super().__init__()
        self.steps = nn.ModuleList(steps)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        source = x
        for i, step in enumerate(self.steps):
            x = step.forward_(x, generator) if i and _owned(x, source) else step(x, generator)
        return x


def _owned(x: torch.Tensor, source: torch.Tensor) -> bool:
    """Whether x may be overwritten: not a view of (or equal to) the pipeline's input, one memory
    location per element (contiguous), and not part of an autograd graph."""
    if x.requires_grad and torch.is_grad_enabled():
        return False
    if not x.is_contiguous() or x.numel() == 0:
        return False
    return x.untyped_storage().data_ptr() != source.untyped_storage().data_ptr()
