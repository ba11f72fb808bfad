"""GaussianNoise: add iid N(0, sigma^2) to every sample of every lead."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ecg_tune.errors import ConfigError
from ecg_tune.ssl.augment.base import Augmentation


@dataclass
class GaussianNoiseParams:
    sigma: float = 0.005  # mV; what the pretraining scripts pass (class default 0.01)


class GaussianNoise(Augmentation):
    Params = GaussianNoiseParams
    name: ClassVar[str] = "gaussian_noise"

    def __init__(self, params: GaussianNoiseParams, fs: float):
        super().__init__(params, fs)
        if params.sigma < 0:
            raise ConfigError(f"augment.{self.name}.sigma", f"must be >= 0, got {params.sigma}")

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        noise = torch.randn(work.shape, generator=generator, device=x.device, dtype=work.dtype)
        return torch.add(work, noise, alpha=self.params.sigma).to(x.dtype)
