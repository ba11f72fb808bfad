"""DynamicTimeWarp: locally squeeze the signal around random centres and stretch the neighbours.

One warp with radius R and step s around centre c (notes 5, the reference's squeeze/refill): the
output samples c-R..c+R show every s-th input sample of c-sR..c+sR (squeeze), and the freed space on
each side is filled by stretching the adjacent R input samples (c-(s+1)R..c-sR on the left, mirrored
on the right) with linear interpolation. Outside c +- (s+1)R nothing moves. As a time map from output
position to input position this is the identity plus a piecewise-linear displacement

    d(u) = sign(u) * (s-1) * min(|u|, R * clamp((W - |u|) / (W - R), 0)),   u = t - c, W = (s+1) R,

which is continuous and increasing, so length, first and last sample are preserved.

Deliberate difference from the reference: the `warps` maps are composed first and the signal is
interpolated once, instead of re-interpolating the already warped signal after every warp (which
smooths it a little more each time). Windows shorter than 2W+1 samples get a proportionally smaller
warp centred in the window instead of failing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from ecg_tune.errors import ConfigError
from ecg_tune.ssl.augment.base import Augmentation
from ecg_tune.ssl.augment.random_resized_crop import interpolate_at


@dataclass
class DynamicTimeWarpParams:
    warps: int = 3
    radius: int = 10  # samples
    step: int = 2  # squeeze factor inside the radius (and stretch factor next to it)


class DynamicTimeWarp(Augmentation):
    Params = DynamicTimeWarpParams
    name: ClassVar[str] = "dynamic_time_warp"

    def __init__(self, params: DynamicTimeWarpParams, fs: float):
        super().__init__(params, fs)
        for field_name, low in (("warps", 0), ("radius", 1), ("step", 1)):
            value = getattr(params, field_name)
            if value < low:
                raise ConfigError(f"augment.{self.name}.{field_name}", f"must be >= {low}, got {value}")

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        batch, _, length = x.shape
        p = self.params
        if length < 3 or p.warps == 0 or p.step == 1:
            return x.clone()
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        dev = x.device
        outer = float((p.step + 1) * p.radius)  # W: half-width of the region that moves
        scale = min(1.0, (length - 1) / (2 * outer))  # shrink the warp for short windows
        outer, inner = outer * scale, p.radius * scale
        # Integer centres keeping the whole moved region inside the window; a shrunken warp fills
        # the window, so its centre is the middle.
        low = math.ceil(outer)
        span = max(int((length - 1) - outer) - low + 1, 1)
        pos = torch.arange(length, device=dev, dtype=torch.float64).expand(batch, -1)
        for _ in range(p.warps):
            u = torch.rand(batch, 1, generator=generator, device=dev, dtype=torch.float64)
            if scale < 1.0:
                centre = torch.full_like(u, (length - 1) / 2)
            else:
                centre = low + (u * span).floor().clamp(max=span - 1)
            offset = pos - centre
            dist = offset.abs()
            reach = inner * ((outer - dist) / (outer - inner)).clamp(min=0)
            pos = pos + offset.sign() * (p.step - 1) * torch.minimum(dist, reach)
        return interpolate_at(work, pos.to(work.dtype)).to(x.dtype)
