"""EMNoise (electromyographic, high-frequency): add iid N(0, C^2), C ~ U(0, max_amplitude) per window."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ecg_tune.errors import ConfigError
from ecg_tune.ssl.augment.base import Augmentation


@dataclass
class EMNoiseParams:
    max_amplitude: float = 0.5  # Cmax; the noise-robustness levels L1-L6 set it (notes 6.5)


class EMNoise(Augmentation):
    Params = EMNoiseParams
    name: ClassVar[str] = "em_noise"

    def __init__(self, params: EMNoiseParams, fs: float):
        super().__init__(params, fs)
        if params.max_amplitude < 0:
            raise ConfigError(
                f"augment.{self.name}.max_amplitude", f"must be >= 0, got {params.max_amplitude}"
            )

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        batch = x.shape[0]
        c = self.params.max_amplitude * torch.rand(
            batch, 1, 1, generator=generator, device=x.device, dtype=work.dtype
        )
        noise = torch.randn(work.shape, generator=generator, device=x.device, dtype=work.dtype)
        return torch.addcmul(work, c, noise).to(x.dtype)
