"""RandomResizedCrop: a random contiguous crop, stretched back to the full length non-uniformly.

The paper's version (not a uniform resize): a crop of m = int(r*T) samples, r ~ U(min, max), is placed
in order at output positions {0, T-1} plus m-2 distinct random interior positions, and the gaps are
filled by linear interpolation per lead. So each window gets a random, locally non-uniform stretch.
The interior positions are sorted uniform order statistics rounded to distinct integers (see
`forward`), not a uniformly drawn (m-2)-subset as the reference's `np.random.choice` gives: the same
kind of random stretch, drawn without sorting.

Vectorised form: every output position j gets a fractional source index into the input (crop index of
the last placed sample at or before j, plus the fraction of the way to the next placed sample), and
one linear interpolation gathers all leads at once. At placed positions the fraction is 0, so the
crop samples appear in the output exactly, as in the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ecg_tune.errors import ConfigError
from ecg_tune.ssl.augment.base import Augmentation


def interpolate_at(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of x (B, L, T) at fractional time indices pos (B, T_out) in [0, T-1].

    The same positions are used for every lead of a sample. Integer positions return input samples
    bit-for-bit.
    """
    left = pos.clamp(0, x.shape[-1] - 1).floor()
    return lerp_at(x, left.long(), pos - left)


def lerp_at(x: torch.Tensor, left: torch.Tensor, frac: torch.Tensor) -> torch.Tensor:
    """x at time index `left` + `frac` (both (B, T_out); left in [0, T-1], frac in [0, 1)).

    Indices are per (sample, time) and broadcast over leads, never materialised per lead.
    `torch.lerp` returns its start value exactly when the weight is 0.
    """
    batch, leads, length = x.shape
    right = (left + 1).clamp(max=length - 1)
    x0 = torch.gather(x, 2, left.unsqueeze(1).expand(batch, leads, -1))
    x1 = torch.gather(x, 2, right.unsqueeze(1).expand(batch, leads, -1))
    return torch.lerp(x0, x1, frac.to(x.dtype).unsqueeze(1).expand_as(x0))


@dataclass
class RandomResizedCropParams:
    min_fraction: float = 0.5  # crop length as a fraction of T, drawn per sample from U(min, max)
    max_fraction: float = 1.0


class RandomResizedCrop(Augmentation):
    Params = RandomResizedCropParams
    name: ClassVar[str] = "random_resized_crop"

    def __init__(self, params: RandomResizedCropParams, fs: float):
        super().__init__(params, fs)
        if not 0.0 < params.min_fraction <= params.max_fraction <= 1.0:
            raise ConfigError(
                f"augment.{self.name}.min_fraction",
                f"need 0 < min_fraction <= max_fraction <= 1, got {params.min_fraction}, {params.max_fraction}",
            )

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        batch, _, length = x.shape
        if length < 3:  # nothing to stretch: a crop of at least 2 samples fills both ends
            return x.clone()
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        dev, p = x.device, self.params

        r = p.min_fraction + (p.max_fraction - p.min_fraction) * torch.rand(
            batch, generator=generator, device=dev, dtype=torch.float64
        )
        # At least 2 samples so that the two end positions have distinct crop samples.
        crop = (r * length).long().clamp(2, length)
        # Uniform start over [0, T-m] inclusive (the reference never picks the last start, notes 8.7).
        u = torch.rand(batch, generator=generator, device=dev, dtype=torch.float64)
        start = torch.minimum((u * (length - crop + 1)).long(), length - crop)

        # Which output positions receive crop samples: both ends plus `inner` = crop-2 distinct interior
        # positions (of the T-2), in order. Drawn without a sort (a per-row argsort of T keys was half
        # the cost of this augmentation on CPU): sorted uniforms are the normalised partial sums of
        # exponential variates (order statistics, S_k / S_{inner+1}); scaling them to the T-crop+1
        # free slots and adding k makes them distinct, increasing integers ("stars and bars"):
        # position_k = 1 + floor(U_(k) * (T - crop + 1)) + k, k = 0..inner-1, in 1..T-2.
        inner = crop - 2
        spare = length - crop  # interior positions left unplaced
        unif = torch.rand(batch, length - 1, generator=generator, device=dev, dtype=torch.float32)
        sums = unif.neg_().log1p_().neg_().cumsum(dim=1)  # -log(1-U) ~ Exp(1), finite for U in [0, 1)
        ordered = sums[:, : length - 2] / sums.gather(1, inner.unsqueeze(1))  # U_(k+1) for k < inner
        slot = (ordered * (spare + 1).unsqueeze(1).to(ordered.dtype)).floor_()
        slot = torch.minimum(slot, spare.unsqueeze(1).to(slot.dtype))  # U_(k) rounds to 1.0 rarely
        k = torch.arange(length - 2, device=dev)
        pos = torch.where(k < inner.unsqueeze(1), slot.long() + k + 1, length - 1)
        # `knots`: the placed positions in order, then T-1 repeated (so knots[index + 1] always exists).
        end = pos.new_full((batch, 2), length - 1)
        knots = torch.cat([pos.new_zeros(batch, 1), pos, end], dim=1)  # (B, T + 1)
        placed = torch.zeros(batch, length, device=dev, dtype=torch.float32).scatter_(1, knots[:, :length], 1.0)

        # Output j lies between the placed positions prev <= j <= next; prev holds crop sample
        # `index` (count of placed positions up to j, minus 1), so j reads the crop at index + frac.
        # (A float32 cumsum counts exactly up to 2**24 and is faster on CPU than one over bool.)
        index = placed.cumsum(dim=1).long() - 1
        prev = knots.gather(1, index)
        nxt = knots.gather(1, index + 1)
        t = torch.arange(length, device=dev)
        frac = (t - prev).to(work.dtype) / (nxt - prev).clamp(min=1)
        return lerp_at(work, start.unsqueeze(1) + index, frac).to(x.dtype)
