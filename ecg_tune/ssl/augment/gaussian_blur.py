"""GaussianBlur: convolve every lead with a fixed kernel (default [0.1, 0.2, 0.4, 0.2, 0.1]).

Edges use replicate padding, so a flat signal stays flat at the window borders (the reference's
Conv1d zero padding pulls the first and last two samples towards 0). Replicate padding also works
for windows shorter than the kernel. Deterministic: `generator` is not used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from ecg_tune.errors import ConfigError
from ecg_tune.ssl.augment.base import Augmentation


@dataclass
class GaussianBlurParams:
    kernel: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.4, 0.2, 0.1])


class GaussianBlur(Augmentation):
    Params = GaussianBlurParams
    name: ClassVar[str] = "gaussian_blur"

    def __init__(self, params: GaussianBlurParams, fs: float):
        super().__init__(params, fs)
        if len(params.kernel) % 2 != 1:
            raise ConfigError(
                f"augment.{self.name}.kernel", f"needs an odd number of taps, got {len(params.kernel)}"
            )
        # Reversed so that the result is a true convolution (np.convolve) also for asymmetric kernels.
        self.taps = [float(k) for k in reversed(params.kernel)]

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        batch, leads, length = x.shape
        half = len(self.taps) // 2
        padded = (
            F.pad(work.reshape(batch * leads, 1, length), (half, half), mode="replicate") if half else work
        )
        padded = padded.reshape(batch, leads, length + 2 * half)
        # A handful of shifted multiply-adds: 2-3x faster on CPU than a 1-channel conv1d.
        out = padded[..., :length] * self.taps[0]
        for j, tap in enumerate(self.taps[1:], start=1):
            out.add_(padded[..., j : j + length], alpha=tap)
        return out.to(x.dtype)
