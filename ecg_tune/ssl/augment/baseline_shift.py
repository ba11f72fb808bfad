"""BaselineShift: add abrupt baseline steps, C * g_l * s(t), C ~ U(0, max) per window.

s(t) is piecewise constant (notes 5, reference `Tnoise_baseline_shift`): n ~ U{0..N} segments with
N = int(max_segments_per_s * T/fs + 0.5) (0 or 1 for a 2.5 s window); each has a centre uniform over
the samples, a length ~ N(mean_segment_s, segment_std_s) seconds converted with `fs`, covers
[int(mid - len/2), int(mid + len/2)] clipped to the window, and sets s to a level a ~ U(-1, 1) (a
later segment overwrites an earlier one where they overlap, as in the reference). Per-lead gains are
g_l = +-N(1, 1) with a random sign: the intended definition, written as such rather than as the
reference's `2*b-1 * N(1, 1)` precedence slip (notes 8.6). The slip evaluates to 2b - N(1, 1), which
happens to have the same distribution (2 - N(1, 1) ~ N(1, 1)), so results are comparable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ecg_tune.errors import ConfigError
from ecg_tune.ssl.augment.base import Augmentation


@dataclass
class BaselineShiftParams:
    max_amplitude: float = 1.0  # Cmax; the noise-robustness levels L1-L6 set it (notes 6.5)
    mean_segment_s: float = 3.0
    segment_std_s: float = 0.6  # the reference uses 0.2 * mean_segment_s
    max_segments_per_s: float = 0.3


class BaselineShift(Augmentation):
    Params = BaselineShiftParams
    name: ClassVar[str] = "baseline_shift"

    def __init__(self, params: BaselineShiftParams, fs: float):
        super().__init__(params, fs)
        key = f"augment.{self.name}"
        for field_name in ("max_amplitude", "mean_segment_s", "segment_std_s", "max_segments_per_s"):
            if getattr(params, field_name) < 0:
                raise ConfigError(f"{key}.{field_name}", f"must be >= 0, got {getattr(params, field_name)}")

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        batch, leads, length = x.shape
        dev, dt, p = x.device, work.dtype, self.params
        most = int(p.max_segments_per_s * length / self.fs + 0.5)
        if most == 0:
            return x.clone()
        f64 = torch.float64

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator, device=dev, dtype=f64)

        count = (rand(batch, 1) * (most + 1)).floor().clamp(max=most)
        mid = (rand(batch, most) * length).floor().clamp(max=length - 1)
        seconds = p.mean_segment_s + p.segment_std_s * torch.randn(
            batch, most, generator=generator, device=dev, dtype=f64
        )
        half = 0.5 * self.fs * seconds
        left = torch.trunc(mid - half).clamp(min=0)  # int() truncation as in the reference
        right = torch.trunc(mid + half).clamp(max=length - 1)
        level = 2 * rand(batch, most) - 1
        active = torch.arange(most, device=dev) < count  # (B, most): the first `count` segments exist

        t = torch.arange(length, device=dev, dtype=f64)
        covers = (t >= left[..., None]) & (t <= right[..., None]) & active[..., None]  # (B, most, T)
        # Overlaps: the last covering segment wins. Index 0 = no segment (level 0).
        order = torch.arange(1, most + 1, device=dev)[None, :, None]
        last = (covers * order).amax(dim=1)  # (B, T)
        levels = torch.cat([torch.zeros(batch, 1, device=dev, dtype=f64), level], dim=1)
        step = torch.gather(levels, 1, last)

        c = p.max_amplitude * rand(batch, 1, 1)
        sign = torch.where(rand(batch, leads, 1) < 0.5, -1.0, 1.0)
        gain = sign * (1 + torch.randn(batch, leads, 1, generator=generator, device=dev, dtype=f64))
        return torch.addcmul(work, (c * gain).to(dt), step.to(dt)[:, None, :]).to(x.dtype)
