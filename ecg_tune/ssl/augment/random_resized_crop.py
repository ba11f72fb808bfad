"""RandomResizedCrop: a random contiguous crop, stretched back to the full length non-uniformly.

The paper's version (not a uniform resize): a crop of m = int(r*T) samples, r ~ U(min, max), is placed
in order at output positions {0, T-1} plus m-2 distinct random interior positions, and the gaps are
filled by linear interpolation per lead. So each window gets a random, locally non-uniform stretch.
The interior positions are, as in the reference (`np.random.choice(..., replace=False)` then sorted),
a uniformly drawn (m-2)-subset of the T-2 interior positions (`interior: subset`, the default). The
former draw, sorted uniform order statistics rounded to distinct integers (`interior: spacings`), is
kept as an option: it needs no sort but stretches less evenly (mean largest gap 6.0 vs the
reference's 7.9 samples at crop 130 of 250; docs/differences.md).

Vectorised form, in two parts. Per sample (`sample`, `crop_map`; arrays of (B, T), cheap): the placed
positions ("knots"), and from them a fractional source index for every output position j: crop index
of the last placed sample at or before j, plus the fraction of the way to the next placed sample.
Per lead (`lerp_at`; (B, L, T), the expensive part): one linear interpolation that gathers all leads
at those indices. At placed positions the fraction is 0, so the crop samples appear in the output
exactly, as in the reference.

On CPU float32 both parts run as one compiled kernel (native.py, rrc_kernel.c) from the same draws
(`draw`), with the same values; `CropThenTimeOut` adds TimeOut to that pass inside a Pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ecg_tune.errors import ConfigError
from ecg_tune.ssl.augment import native
from ecg_tune.ssl.augment.base import Augmentation, random_block

# On CPU, `lerp_at` works through the batch in pieces of about this many output elements (1 MiB of
# float32), so that its scratch buffer of upper neighbours stays in cache and the output is the only
# full-size allocation.
CHUNK_ELEMENTS = 1 << 18


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
    `torch.lerp` returns its start value exactly when the weight is 0. Returns a new tensor.

    Cost: two gathers and a lerp over (B, L, T_out). Without autograd, the lower neighbours are
    gathered straight into the output and the lerp runs in place on it; on CPU the upper neighbours
    go to a small scratch buffer, one batch chunk at a time (`CHUNK_ELEMENTS`). A second full-size
    temporary would cost memory traffic and, freed together with other large blocks, lets the C
    allocator hand the memory back to the OS after every call, so that the next call pays page faults
    on fresh memory (several times the arithmetic for a batch of 1024 x 12 x 250 on one core).
    """
    batch, leads, length = x.shape
    steps = left.shape[1]
    right = (left + 1).clamp_(max=length - 1)
    weight = frac.to(x.dtype).unsqueeze(1)  # (B, 1, T_out)
    if x.requires_grad and torch.is_grad_enabled():
        x0 = torch.gather(x, 2, left.unsqueeze(1).expand(batch, leads, steps))
        x1 = torch.gather(x, 2, right.unsqueeze(1).expand(batch, leads, steps))
        return torch.lerp(x0, x1, weight.expand_as(x0))
    out = torch.empty((batch, leads, steps), dtype=x.dtype, device=x.device)
    rows = batch if x.device.type != "cpu" else max(1, CHUNK_ELEMENTS // max(1, leads * steps))
    scratch = torch.empty((min(rows, batch), leads, steps), dtype=x.dtype, device=x.device)
    for lo in range(0, batch, rows):
        hi = min(batch, lo + rows)
        part, upper, src = out[lo:hi], scratch[: hi - lo], x[lo:hi]
        torch.gather(src, 2, left[lo:hi].unsqueeze(1).expand(hi - lo, leads, steps), out=part)
        torch.gather(src, 2, right[lo:hi].unsqueeze(1).expand(hi - lo, leads, steps), out=upper)
        part.lerp_(upper, weight[lo:hi])
    return out


def crop_map(start: torch.Tensor, knots: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Source index of every output position, from the placed positions of each crop sample.

    `knots` (B, T+1), float: knots[b, i] is the output position of crop sample i (increasing integers,
    knots[b, 0] = 0), and T-1 from the last crop sample on. `start` (B,): first input sample of each
    crop. Returns (left, frac), each (B, T): output j reads the input at start + index + frac, where
    index is the crop sample placed last at or before j and frac = (j - its position) / (next
    position - its position), in `dtype` (0 exactly at placed positions).
    """
    batch, width = knots.shape
    length = width - 1
    dev = knots.device
    # Which outputs hold a crop sample: 0, the interior knots (those of samples past the crop sit
    # at T-1) and T-1. Their running count is crop index + 1. (On CPU an int64 cumsum is faster than
    # one over float32 or bool, and scatter from an expanded tensor is faster than from a scalar.)
    ones = torch.ones((1, 1), device=dev, dtype=torch.int64).expand(batch, length - 2)
    placed = torch.zeros(batch, length, device=dev, dtype=torch.int64)
    placed.scatter_(1, knots[:, 1 : length - 1].long(), ones)
    placed[:, 0] = 1
    placed[:, length - 1] = 1
    upper = placed.cumsum_(dim=1)  # index + 1: knots[upper] is the next placed position
    prev = knots.gather(1, upper - 1)
    step = knots.gather(1, upper).sub_(prev).clamp_(min=1)
    frac = torch.arange(length, device=dev, dtype=knots.dtype).sub(prev)
    if dtype != frac.dtype:
        frac, step = frac.to(dtype), step.to(dtype)
    return upper.add_(start.unsqueeze(1) - 1), frac.div_(step)


def subset_sums(
    crop: torch.Tensor, length: int, device: torch.device | str, generator: torch.Generator | None
) -> torch.Tensor:
    """`sums` (B, T-1) for which `RandomResizedCrop.knots` (and the compiled kernel, which repeats its
    float32 operations) places the crop's interior samples at a uniformly random (crop-2)-subset of
    the T-2 interior positions, as the reference does.

    The subset: random keys, the crop-2 smallest per row (a sort, then a threshold; a tie at the
    threshold is cut by position, so exactly crop-2 are chosen). Its sorted positions p_k give gaps
    g_k = p_k - 1 - k in [0, T-crop]; `knots` computes floor(sums[k] / sums[crop-2] * (T-crop+1)) + k + 1,
    so sums[k] = (g_k + 0.5) / (T-crop+1) with sums[crop-2] = 1 returns p_k exactly (the 0.5 keeps the
    floor away from float32 rounding), and entries past crop-2 (>= 1) place nothing.
    """
    keys = torch.rand(crop.shape[0], length - 2, generator=generator, device=device, dtype=torch.float32)
    fast = native.subset_sums(keys, crop, length)  # CPU: a selection per row in C instead of a sort
    return fast if fast is not None else subset_sums_from_keys(keys, crop, length)


def subset_sums_from_keys(keys: torch.Tensor, crop: torch.Tensor, length: int) -> torch.Tensor:
    """`subset_sums` from its random keys (B, T-2), in PyTorch (CUDA, or CPU without the kernel)."""
    device = keys.device
    batch, inner_max = keys.shape[0], length - 2
    inner = (crop - 2).to(device)
    ordered = keys.sort(dim=1).values
    threshold = ordered.gather(1, (inner - 1).clamp(min=0).unsqueeze(1))
    chosen = (keys <= threshold) & (inner > 0).unsqueeze(1)
    chosen &= chosen.cumsum(dim=1) <= inner.unsqueeze(1)
    slots = torch.arange(1, inner_max + 1, device=device)
    rank = chosen.cumsum(dim=1) - 1  # k of each chosen slot
    positions = torch.full((batch, inner_max + 1), float(length), device=device)  # +1: a dump column
    positions.scatter_(1, torch.where(chosen, rank, inner_max), slots.expand(batch, -1).float())
    k = torch.arange(inner_max, device=device, dtype=torch.float32)
    gaps = positions[:, :inner_max] - 1 - k
    spare = (length - crop).to(device=device, dtype=torch.float32).unsqueeze(1)
    sums = torch.ones(batch, length - 1, device=device, dtype=torch.float32)
    sums[:, :inner_max] = torch.where(k < inner.unsqueeze(1), (gaps + 0.5) / (spare + 1), 1.0)
    sums.scatter_(1, inner.unsqueeze(1), 1.0)
    return sums


@dataclass
class RandomResizedCropParams:
    min_fraction: float = 0.5  # crop length as a fraction of T, drawn per sample from U(min, max)
    max_fraction: float = 1.0
    interior: str = "subset"  # subset (the reference's uniform random subset) | spacings (no sort)


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
        if params.interior not in ("subset", "spacings"):
            raise ConfigError(f"augment.{self.name}.interior", f"must be subset or spacings, got {params.interior!r}")

    def draw(
        self, batch: int, length: int, device: torch.device | str, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All random draws of `forward` for windows of `length` >= 3 samples: (start, crop, sums).

        start, crop (B,) int64: the crop is input samples start .. start+crop-1. sums (B, T-1)
        float32: running sums of exponential variates, from which `knots` places the crop samples.
        """
        p = self.params
        # At least 2 samples so that the two end positions have distinct crop samples.
        start, crop = random_block(batch, length, (p.min_fraction, p.max_fraction), device, generator, min_size=2)
        if p.interior == "subset":
            return start, crop, subset_sums(crop, length, device, generator)
        unif = torch.rand(batch, length - 1, generator=generator, device=device, dtype=torch.float32)
        sums = unif.neg_().log1p_().neg_().cumsum_(dim=1)  # -log(1-U) ~ Exp(1), finite for U in [0, 1)
        return start, crop, sums

    @staticmethod
    def knots(crop: torch.Tensor, sums: torch.Tensor) -> torch.Tensor:
        """Output position of each crop sample, (B, T+1) float32 (see `crop_map`), from `draw`.

        Which output positions receive crop samples: both ends plus `inner` = crop-2 distinct interior
        positions (of the T-2), in order. Drawn without a sort (a per-row argsort of T keys was half
        the cost of this augmentation on CPU): sorted uniforms are the normalised partial sums of
        exponential variates (order statistics, S_k / S_{inner+1}); scaling them to the T-crop+1
        free slots and adding k makes them distinct, increasing integers ("stars and bars"):
        position_k = 1 + floor(U_(k) * (T - crop + 1)) + k, k = 0..inner-1, in 1..T-2.
        For k >= inner the same formula gives >= T-1, clamped to T-1. (rrc_kernel.c repeats these
        float32 operations in this order, so both give the same positions.)
        """
        batch, length = sums.shape[0], sums.shape[1] + 1
        dev = sums.device
        inner = crop - 2
        spare = (length - crop).unsqueeze(1).to(torch.float32)  # interior positions left unplaced
        knots = torch.empty(batch, length + 1, device=dev, dtype=torch.float32)
        pos = knots[:, 1 : length - 1]
        torch.div(sums[:, : length - 2], sums.gather(1, inner.unsqueeze(1)), out=pos)  # U_(k+1)
        pos.mul_(spare + 1).floor_()
        torch.minimum(pos, spare, out=pos)  # U_(k) rounds to 1.0 rarely
        pos.add_(torch.arange(1, length - 1, device=dev, dtype=pos.dtype)).clamp_(max=length - 1)
        knots[:, 0] = 0.0
        knots[:, length - 1 :] = length - 1
        return knots

    def sample(
        self, batch: int, length: int, device: torch.device | str, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The random part of `forward`: (start, crop, knots), see `draw` and `knots`.

        Draws from `generator` exactly what `forward` draws, so `forward(x, g)` equals interpolating
        x's crops through these knots for a generator `g` in the same state.
        """
        start, crop, sums = self.draw(batch, length, device, generator)
        return start, crop, self.knots(crop, sums)

    def then(self, following: Augmentation) -> Augmentation | None:
        # RandomResizedCrop then TimeOut: the reference pretraining pair (paper-notes 5), worth one pass.
        return CropThenTimeOut(self, following) if following.zeroes_one_block else None

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        batch, _, length = x.shape
        if length < 3:  # nothing to stretch: a crop of at least 2 samples fills both ends
            return x.clone()
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        start, crop, sums = self.draw(batch, length, x.device, generator)
        fused = native.resized_crop(work, start, crop, sums)  # CPU float32: compiled kernel, same values
        if fused is not None:
            return fused.to(x.dtype)
        knots = self.knots(crop, sums)
        left, frac = crop_map(start, knots, work.dtype)
        return lerp_at(work, left, frac).to(x.dtype)


class CropThenTimeOut(Augmentation):
    """RandomResizedCrop followed by a step that zeroes one block (TimeOut; built by `Pipeline`): on CPU
    float32 one kernel pass zeroes that block of each output row while the row is in cache, instead of a second pass
    over the batch. Same draws in the same order, same values; elsewhere the two steps in turn."""

    name: ClassVar[str] = "random_resized_crop+timeout"

    def __init__(self, crop: RandomResizedCrop, timeout: Any):  # an Augmentation with zeroes_one_block
        super().__init__(crop.params, crop.fs)
        self.crop, self.timeout = crop, timeout

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        batch, _, length = x.shape
        if length >= 3 and native.applies(x) and native.library() is not None:
            start, crop, sums = self.crop.draw(batch, length, x.device, generator)
            block = self.timeout.draw(batch, length, x.device, generator)
            fused = native.resized_crop(x, start, crop, sums, zero=block)
            assert fused is not None  # applies(x) and the library were checked above
            return fused
        y = self.crop(x, generator)  # a new tensor: TimeOut in place, unless autograd records it
        if y.requires_grad and torch.is_grad_enabled():
            return self.timeout(y, generator)
        return self.timeout.forward_(y, generator)

    def extra_repr(self) -> str:
        return f"{self.crop.extra_repr()}; then {self.timeout.extra_repr()}"
