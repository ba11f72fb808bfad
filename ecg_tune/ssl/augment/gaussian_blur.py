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
            raise ConfigError(f"augment.{self.name}.kernel", f"needs an odd number of taps, got {len(params.kernel)}")
        # Flipped so that the result is a true convolution (np.convolve) also for asymmetric kernels;
        # conv1d computes a cross-correlation.
        self.register_buffer("weight", torch.tensor(params.kernel, dtype=torch.float64).flip(0), persistent=False)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        batch, leads, length = x.shape
        half = len(self.params.kernel) // 2
        flat = work.reshape(batch * leads, 1, length)
        flat = F.pad(flat, (half, half), mode="replicate") if half else flat
        weight = self.weight.to(device=x.device, dtype=work.dtype).view(1, 1, -1)
        return F.conv1d(flat, weight).reshape(batch, leads, length).to(x.dtype)
