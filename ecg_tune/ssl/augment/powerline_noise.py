"""PowerlineNoise: add C * g_l * sum_{k=1..H} a_k cos(2 pi k f0 t + phi), C ~ U(0, max) per window.

a_k ~ U(0, 1) per harmonic, one phase phi ~ U(0, 2 pi) per window, per-lead gain g_l ~ U(-1, 1),
t in seconds from `fs`. Deliberate differences from the reference (notes 5, 8.6):
- C scales the signal once (the reference multiplies by C twice, so its amplitude is C^2-like).
- Harmonics above the Nyquist frequency fs/2 are skipped instead of aliasing onto lower
  frequencies (at 100 Hz the reference's 100 Hz harmonic becomes a constant offset and 150 Hz
  aliases to 50 Hz). A harmonic exactly at Nyquist is kept: it samples to the alternating-sign
  pattern (-1)^n cos(phi), which is what a 50 Hz hum looks like at 100 Hz.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from ecg_tune.errors import ConfigError
from ecg_tune.ssl.augment.base import Augmentation


@dataclass
class PowerlineNoiseParams:
    max_amplitude: float = 0.2  # Cmax; the noise-robustness levels L1-L6 set it (notes 6.5)
    frequency_hz: float = 50.0  # mains frequency: 50 or 60
    harmonics: int = 3  # K: components at k * frequency_hz, k = 1..K


class PowerlineNoise(Augmentation):
    Params = PowerlineNoiseParams
    name: ClassVar[str] = "powerline_noise"

    def __init__(self, params: PowerlineNoiseParams, fs: float):
        super().__init__(params, fs)
        key = f"augment.{self.name}"
        if params.max_amplitude < 0:
            raise ConfigError(f"{key}.max_amplitude", f"must be >= 0, got {params.max_amplitude}")
        if params.frequency_hz <= 0:
            raise ConfigError(f"{key}.frequency_hz", f"must be > 0, got {params.frequency_hz}")
        if params.harmonics < 1:
            raise ConfigError(f"{key}.harmonics", f"must be >= 1, got {params.harmonics}")
        nyquist = self.fs / 2
        # Representable harmonics (tolerance so that 50 Hz at fs = 100 counts as "at Nyquist").
        self.kept = [
            k for k in range(1, params.harmonics + 1) if k * params.frequency_hz <= nyquist * (1 + 1e-9)
        ]

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        batch, leads, length = x.shape
        dev, dt = x.device, work.dtype
        # Draw every harmonic's amplitude even if it is skipped, so the draws do not depend on fs.
        c = self.params.max_amplitude * torch.rand(batch, 1, 1, generator=generator, device=dev, dtype=dt)
        a = torch.rand(batch, self.params.harmonics, generator=generator, device=dev, dtype=dt)
        phi = 2 * math.pi * torch.rand(batch, 1, generator=generator, device=dev, dtype=dt)
        gain = 2 * torch.rand(batch, leads, 1, generator=generator, device=dev, dtype=dt) - 1
        if not self.kept:
            return x.clone()
        freqs = torch.tensor(self.kept, device=dev, dtype=torch.float64) * self.params.frequency_hz
        # Phase in cycles reduced modulo 1 in float64: exact (-1)^n at Nyquist, no drift on long records.
        cycles = torch.frac(
            torch.outer(freqs, torch.arange(length, device=dev, dtype=torch.float64) / self.fs)
        )
        angle = 2 * math.pi * cycles
        basis = torch.cat([angle.cos(), angle.sin()]).to(dt)  # (2H, T)
        amp = a[:, None, [k - 1 for k in self.kept]] * (c * gain)  # (B, L, H): every scale of a lead
        coef = torch.cat([amp * phi.cos()[:, :, None], -amp * phi.sin()[:, :, None]], dim=2)
        # x + sum_k amp_k cos(w_k t + phi) as one matrix product added to x.
        out = torch.addmm(work.reshape(batch * leads, length), coef.reshape(batch * leads, -1), basis)
        return out.view(batch, leads, length).to(x.dtype)
