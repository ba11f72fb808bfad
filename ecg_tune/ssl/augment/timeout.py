"""TimeOut: zero one random contiguous block of int(r*T) samples in all leads, r ~ U(min, max)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ecg_tune.errors import ConfigError
from ecg_tune.ssl.augment import native
from ecg_tune.ssl.augment.base import Augmentation, random_block


@dataclass
class TimeOutParams:
    min_fraction: float = 0.2  # pretraining scripts pass [0.2, 0.4] (class default [0, 0.5])
    max_fraction: float = 0.4


class TimeOut(Augmentation):
    Params = TimeOutParams
    zeroes_one_block = True  # see Augmentation: RandomResizedCrop fuses it into its pass
    name: ClassVar[str] = "timeout"

    def __init__(self, params: TimeOutParams, fs: float):
        super().__init__(params, fs)
        if not 0.0 <= params.min_fraction <= params.max_fraction <= 1.0:
            raise ConfigError(
                f"augment.{self.name}.min_fraction",
                f"need 0 <= min_fraction <= max_fraction <= 1, got {params.min_fraction}, {params.max_fraction}",
            )

    def draw(
        self, batch: int, length: int, device: torch.device | str, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All random draws of `forward`: (start, size), (B,) int64; samples start .. start+size-1."""
        p = self.params
        return random_block(batch, length, (p.min_fraction, p.max_fraction), device, generator)

    def keep_mask(
        self, batch: int, length: int, device: torch.device | str, dtype: torch.dtype,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The random part of `forward`: (B, 1, T) of `dtype`, 0 inside each window's block, else 1."""
        start, size = self.draw(batch, length, device, generator)
        return self.mask_from(start, size, length, dtype)

    @staticmethod
    def mask_from(start: torch.Tensor, size: torch.Tensor, length: int, dtype: torch.dtype) -> torch.Tensor:
        """(B, 1, T) of `dtype`: 0 at samples start .. start+size-1 of each window, else 1."""
        device = start.device
        # Sample t is in the block [start, start+size) iff |2t - (2 start + size - 1)| <= size - 1.
        # Every term is an integer, so clamping |2t - centre| - (size - 1) to [0, 1] gives exactly 0
        # inside and 1 outside: four float32 ops on (B, T) instead of comparisons over int64 (exact
        # while 2T < 2**24).
        f32 = torch.float32
        centre = (2 * start + size - 1).to(f32).unsqueeze(1)
        twice_t = torch.arange(0, 2 * length, 2, device=device, dtype=f32)
        keep = (twice_t - centre).abs_().sub_((size - 1).to(f32).unsqueeze(1)).clamp_(0, 1)
        return keep.to(dtype).unsqueeze(1)  # (B, 1, T), the same for every lead

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        # Multiplying by a 0/1 mask is several times faster on CPU than masked_fill with a broadcast
        # mask; inputs are finite signals, so 0 * x is 0.
        batch, _, length = x.shape
        return x * self.keep_mask(batch, length, x.device, x.dtype, generator)

    def forward_(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """`forward` written into x (same random draws, same values): one pass, no new tensor.

        On CPU float32 the compiled kernel (native.py) zeroes the blocks only, lead by lead.
        """
        batch, _, length = x.shape
        start, size = self.draw(batch, length, x.device, generator)
        if native.zero_blocks(x, start, size):
            return x
        return x.mul_(self.mask_from(start, size, length, x.dtype))
