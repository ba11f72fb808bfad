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

    # A step that only zeroes one block of samples per window (all its leads) sets this and implements
    # `draw(batch, length, device, generator) -> (start, size)`: the draws its `forward` makes. A crop
    # before it may then zero the block in its own pass (RandomResizedCrop.then), with the same draws.
    zeroes_one_block: ClassVar[bool] = False

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def forward_(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """`forward` for an x that the caller owns and no longer needs: may write the result into x.

        Same random draws and the same result as `forward`. `Pipeline` calls it on the tensors that
        its own earlier steps returned, never on its input. The default is `forward` (a new tensor);
        pointwise augmentations override it to save an allocation and a pass over the batch.
        """
        return self.forward(x, generator)

    def then(self, following: Augmentation) -> Augmentation | None:
        """One module computing this step followed by `following` with the same random draws and
        the same result, when that is cheaper than two steps (e.g. one pass over the batch instead
        of two); None (the default) when there is no such fusion. `Pipeline` asks each adjacent pair.
        """
        return None

    def extra_repr(self) -> str:
        return f"{self.params}, fs={self.fs:g}"


def random_block(
    batch: int, length: int, fractions: tuple[float, float], device: torch.device | str,
    generator: torch.Generator | None, min_size: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(start, size), (B,) int64: a block of int(r * length) samples, r ~ U(fractions), at least
    `min_size`, starting uniformly in [0, length - size] inclusive (the reference never picks the
    last start, notes 8.7). Draws r, then the start, each (B,) float64 from `generator`."""
    lo, hi = fractions
    r = lo + (hi - lo) * torch.rand(batch, generator=generator, device=device, dtype=torch.float64)
    size = (r * length).long().clamp_(min_size, length)
    return uniform_start(batch, length, size, device, generator), size


def uniform_start(
    batch: int, length: int, size: torch.Tensor | int, device: torch.device | str,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Start of a block of `size` samples, uniform over [0, length - size] inclusive, (B,) int64."""
    u = torch.rand(batch, generator=generator, device=device, dtype=torch.float64)
    return (u * (length - size + 1)).long().clamp_(max=length - size)  # u * (n+1) may round to n+1


class Pipeline(nn.Module):
    """Augmentations applied in order, each with probability 1 (as in the paper).

    The input is never modified. Adjacent steps that offer a fused module (`Augmentation.then`, e.g.
    RandomResizedCrop then TimeOut) run as that module. A step whose input is a fresh tensor that an
    earlier step returned (not sharing memory with the pipeline's input, contiguous, outside
    autograd) runs as `step.forward_`, which may work in place (e.g. a mask multiply into the
    previous step's output instead of a second batch-sized tensor). Either way the result is the
    same as calling the steps one after the other.
    """

    def __init__(self, steps: list[Augmentation]):
        super().__init__()
        self.steps = nn.ModuleList(steps)
        self._plan = _fuse(list(steps))  # not registered: the same modules, regrouped

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        source = x
        for i, step in enumerate(self._plan):
            x = step.forward_(x, generator) if i and _owned(x, source) else step(x, generator)
        return x


def _fuse(steps: list[Augmentation]) -> list[Augmentation]:
    plan: list[Augmentation] = []
    i = 0
    while i < len(steps):
        fused = steps[i].then(steps[i + 1]) if i + 1 < len(steps) else None
        plan.append(fused if fused is not None else steps[i])
        i += 2 if fused is not None else 1
    return plan


def _owned(x: torch.Tensor, source: torch.Tensor) -> bool:
    """Whether x may be overwritten: not a view of (or equal to) the pipeline's input, one memory
    location per element (contiguous), and not part of an autograd graph."""
    if x.requires_grad and torch.is_grad_enabled():
        return False
    if not x.is_contiguous() or x.numel() == 0:
        return False
    return x.untyped_storage().data_ptr() != source.untyped_storage().data_ptr()
