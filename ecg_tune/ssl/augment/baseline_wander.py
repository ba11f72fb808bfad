"""BaselineWander: add C * sum_k a_k cos(2 pi k fdelta t + phi_k), k = 0..K-1, C ~ U(0, max) per window.

The paper's definition (torch version of the reference, notes 5): K = int(cutoff/fdelta + 0.5) = 50
components at 0, 0.01, ..., 0.49 Hz (including the constant k = 0 term), a_k ~ U(0, 1),
phi_k ~ U(0, 2 pi), t in seconds from `fs` (so the wander stays below the cutoff at any sampling rate).

Deliberate difference: every lead gets its own a_k and phi_k (the reference adds one identical
waveform to all leads, notes 8.6; `shared_across_leads=True` restores that). C is shared by the leads
of a window. The sum is evaluated as one matrix product with a cos/sin basis,
a cos(w t + phi) = (a cos phi) cos(w t) - (a sin phi) sin(w t), fused with the addition to x.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from ecg_tune.errors import ConfigError
from ecg_tune.ssl.augment.base import Augmentation


@dataclass
class BaselineWanderParams:
    max_amplitude: float = 0.1  # Cmax; the noise-robustness levels L1-L6 set it (notes 6.5)
    cutoff_hz: float = 0.5  # fc
    delta_hz: float = 0.01  # fdelta: frequency spacing of the components
    shared_across_leads: bool = False  # True = the reference's single waveform on every lead


class BaselineWander(Augmentation):
    Params = BaselineWanderParams
    name: ClassVar[str] = "baseline_wander"

    def __init__(self, params: BaselineWanderParams, fs: float):
        super().__init__(params, fs)
        key = f"augment.{self.name}"
        if params.max_amplitude < 0:
            raise ConfigError(f"{key}.max_amplitude", f"must be >= 0, got {params.max_amplitude}")
        if params.delta_hz <= 0 or params.cutoff_hz < params.delta_hz:
            raise ConfigError(f"{key}.delta_hz", f"need 0 < delta_hz <= cutoff_hz, got {params.delta_hz}")
        self.terms = int(params.cutoff_hz / params.delta_hz + 0.5)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        batch, leads, length = x.shape
        dev, dt = x.device, work.dtype
        # Basis in float64: k * fdelta * n / fs reduced modulo 1 keeps the phase exact for long records.
        cycles = torch.outer(
            torch.arange(self.terms, device=dev, dtype=torch.float64) * self.params.delta_hz,
            torch.arange(length, device=dev, dtype=torch.float64) / self.fs,
        )
        angle = 2 * math.pi * torch.frac(cycles)
        basis = torch.cat([angle.cos(), angle.sin()]).to(dt)  # (2K, T)

        wave_leads = 1 if self.params.shared_across_leads else leads
        c = self.params.max_amplitude * torch.rand(batch, 1, 1, generator=generator, device=dev, dtype=dt)
        a = torch.rand(batch, wave_leads, self.terms, generator=generator, device=dev, dtype=dt)
        phi = (
            2 * math.pi * torch.rand(batch, wave_leads, self.terms, generator=generator, device=dev, dtype=dt)
        )
        coef = torch.cat([c * a * phi.cos(), -c * a * phi.sin()], dim=2).expand(batch, leads, -1)
        out = torch.addmm(work.reshape(batch * leads, length), coef.reshape(batch * leads, -1), basis)
        return out.view(batch, leads, length).to(x.dtype)
