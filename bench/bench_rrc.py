"""RandomResizedCrop (+ TimeOut) on CPU: the package's version vs the previous one vs the per-window
numpy loop, plus a grid_sample variant that was tried and not adopted.

- previous: the implementation before the single-pass rewrite, kept below verbatim apart from its
  name (sort-free positions, then two full-size gathers and an out-of-place lerp), with the previous
  TimeOut (out-of-place mask multiply) after it.
- kernel (the default on CPU float32): `RandomResizedCrop` through the compiled kernel
  (ecg_tune/ssl/augment/native.py: crop map and interpolation fused, one pass), and the pipeline
  `build_pipeline(["random_resized_crop", "timeout"])`, which runs both steps as one kernel pass
  that zeroes TimeOut's block while each output row is in cache.
- eager: the same module with the kernel switched off (what CUDA tensors and machines without a C
  compiler run): same random draws and positions, per-sample map in a few batched passes; gather +
  in-place lerp through a cache-sized scratch buffer; TimeOut in place on the crop's output.
- grid_sample: the same positions, interpolated by `F.grid_sample` on (B, L, 1, T) (one fused
  gather + lerp kernel for all leads), TimeOut folded in by moving its block's coordinates outside
  the input (padding_mode="zeros").

Before timing, the script checks that the variants agree (eager == previous bit for bit; kernel ==
eager within one float32 rounding; grid_sample within float rounding). Each call's output is dropped before the next call, as in training. Rounds
rotate the order of the variants; a table gives the median and best wall time and the median
process-CPU time per batch, and throughput ratios against the numpy loop (RRC alone against the numpy
RRC, the pairs against the numpy RRC + TimeOut).

Two tables: first with glibc malloc's default behaviour (what a training process gets), then after
`mallopt` raised the trim and mmap thresholds so that freed memory stays in the process. Batch-sized
blocks (12 MiB here) freed together otherwise go back to the OS and the next call page-faults fresh
memory; the second table shows the arithmetic alone. (glibc only; elsewhere the second table is
skipped.)

    .venv/bin/python bench/bench_rrc.py [--batch 1024] [--threads 1] [--rounds 15]
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from _common import LoadSampler, header, table, verdict
from bench_augment import np_loop, np_random_resized_crop, np_timeout

from ecg_tune.ssl.augment import build_pipeline, native
from ecg_tune.ssl.augment.random_resized_crop import RandomResizedCrop, RandomResizedCropParams, crop_map
from ecg_tune.ssl.augment.timeout import TimeOut, TimeOutParams


def previous_lerp_at(x: torch.Tensor, left: torch.Tensor, frac: torch.Tensor) -> torch.Tensor:
    """The previous `lerp_at`: two full-size gathers and an out-of-place lerp."""
    batch, leads, length = x.shape
    right = (left + 1).clamp(max=length - 1)
    x0 = torch.gather(x, 2, left.unsqueeze(1).expand(batch, leads, -1))
    x1 = torch.gather(x, 2, right.unsqueeze(1).expand(batch, leads, -1))
    return torch.lerp(x0, x1, frac.to(x.dtype).unsqueeze(1).expand_as(x0))


class PreviousResizedCrop(RandomResizedCrop):
    """The previous implementation (sort-free positions, int64 bookkeeping, previous_lerp_at)."""

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        batch, _, length = x.shape
        if length < 3:
            return x.clone()
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        dev, p = x.device, self.params
        r = p.min_fraction + (p.max_fraction - p.min_fraction) * torch.rand(
            batch, generator=generator, device=dev, dtype=torch.float64
        )
        crop = (r * length).long().clamp(2, length)
        u = torch.rand(batch, generator=generator, device=dev, dtype=torch.float64)
        start = torch.minimum((u * (length - crop + 1)).long(), length - crop)
        inner = crop - 2
        spare = length - crop
        unif = torch.rand(batch, length - 1, generator=generator, device=dev, dtype=torch.float32)
        sums = unif.neg_().log1p_().neg_().cumsum(dim=1)
        ordered = sums[:, : length - 2] / sums.gather(1, inner.unsqueeze(1))
        slot = (ordered * (spare + 1).unsqueeze(1).to(ordered.dtype)).floor_()
        slot = torch.minimum(slot, spare.unsqueeze(1).to(slot.dtype))
        k = torch.arange(length - 2, device=dev)
        pos = torch.where(k < inner.unsqueeze(1), slot.long() + k + 1, length - 1)
        end = pos.new_full((batch, 2), length - 1)
        knots = torch.cat([pos.new_zeros(batch, 1), pos, end], dim=1)
        placed = torch.zeros(batch, length, device=dev, dtype=torch.float32).scatter_(1, knots[:, :length], 1.0)
        index = placed.cumsum(dim=1).long() - 1
        prev = knots.gather(1, index)
        nxt = knots.gather(1, index + 1)
        t = torch.arange(length, device=dev)
        frac = (t - prev).to(work.dtype) / (nxt - prev).clamp(min=1)
        return previous_lerp_at(work, start.unsqueeze(1) + index, frac).to(x.dtype)


class PreviousTimeOut(TimeOut):
    """The previous TimeOut: int64 comparisons for the block, out-of-place mask multiply."""

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        batch, _, length = x.shape
        dev, p = x.device, self.params
        r = p.min_fraction + (p.max_fraction - p.min_fraction) * torch.rand(
            batch, generator=generator, device=dev, dtype=torch.float64
        )
        size = (r * length).long()
        u = torch.rand(batch, generator=generator, device=dev, dtype=torch.float64)
        start = torch.minimum((u * (length - size + 1)).long(), length - size)
        t = torch.arange(length, device=dev)
        block = (t >= start[:, None]) & (t < (start + size)[:, None])
        return x * (~block).to(x.dtype)[:, None, :]


class GridSampleResizedCrop(RandomResizedCrop):
    """The same positions, interpolated with F.grid_sample; TimeOut optionally folded in."""

    def __init__(self, params: RandomResizedCropParams, fs: float, timeout: TimeOut | None = None):
        super().__init__(params, fs)
        self.timeout = timeout

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        batch, leads, length = x.shape
        start, _, knots = self.sample(batch, length, x.device, generator)
        left, frac = crop_map(start, knots, x.dtype)
        # Normalised x coordinate for align_corners=True: -1 is sample 0, +1 is sample T-1.
        coord = (left.to(x.dtype) + frac).mul_(2 / (length - 1)).sub_(1)
        if self.timeout is not None:  # zeros: both neighbours outside the input
            keep = self.timeout.keep_mask(batch, length, x.device, x.dtype, generator)[:, 0]
            coord = torch.where(keep > 0, coord, 3.0)
        grid = torch.stack([coord, torch.zeros_like(coord)], dim=-1).unsqueeze(1)  # (B, 1, T, 2)
        out = F.grid_sample(x.view(batch, leads, 1, length), grid, mode="bilinear", padding_mode="zeros",
                            align_corners=True)
        return out.view(batch, leads, length)


def eager(fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """fn with the compiled kernel switched off (as without a C compiler, or on CUDA)."""

    def run() -> torch.Tensor:
        library = native.library
        native.library = lambda: None  # type: ignore[assignment]
        try:
            return fn()
        finally:
            native.library = library  # type: ignore[assignment]

    return run


def check_agreement(x: torch.Tensor, new: RandomResizedCrop, old: PreviousResizedCrop, pipe: torch.nn.Module,
                    old_timeout: PreviousTimeOut, grid_pair: GridSampleResizedCrop) -> str:
    def gen() -> torch.Generator:
        return torch.Generator().manual_seed(123)

    if native.library() is None:
        raise SystemExit("the compiled kernel is unavailable here (no C compiler?): nothing to compare")
    same_rrc = torch.equal(eager(lambda: new(x, gen()))(), old(x, gen()))
    g = gen()
    before = old_timeout(old(x, g), g)
    eager_pair = eager(lambda: pipe(x, gen()))()
    same_pair = torch.equal(eager_pair, before)
    kernel_err = max((new(x, gen()) - old(x, gen())).abs().max().item(), (pipe(x, gen()) - before).abs().max().item())
    grid_err = (grid_pair(x, gen()) - eager_pair).abs().max().item()
    scale = x.abs().max().item()
    if not (same_rrc and same_pair and kernel_err <= 1e-6 * scale and grid_err < 1e-4):
        raise SystemExit(f"variants disagree: eager == previous: RRC {same_rrc}, pair {same_pair}; "
                         f"kernel err {kernel_err}; grid err {grid_err}")
    return (f"agreement on this batch: eager == previous bit for bit (RRC and RRC + TimeOut); kernel vs eager "
            f"max |diff| {kernel_err:.1e} (signal max {scale:.1f}); grid_sample max |diff| {grid_err:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--length", type=int, default=250)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--numpy-every", type=int, default=3, help="time the slow numpy loop every n-th round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--target", type=float, default=20.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fs = 100.0
    x = torch.randn(args.batch, 12, args.length) * 0.3
    x_np = x.numpy().copy()
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    new = RandomResizedCrop(RandomResizedCropParams(), fs)
    old = PreviousResizedCrop(RandomResizedCropParams(), fs)
    timeout = TimeOut(TimeOutParams(), fs)
    old_timeout = PreviousTimeOut(TimeOutParams(), fs)
    pipe = build_pipeline(["random_resized_crop", "timeout"], None, fs)
    assert type(pipe.steps[0]) is RandomResizedCrop and type(pipe.steps[1]) is TimeOut
    grid = GridSampleResizedCrop(RandomResizedCropParams(), fs)
    grid_pair = GridSampleResizedCrop(RandomResizedCropParams(), fs, timeout)

    rrc_ref, pair_ref = "numpy per-window RRC", "numpy per-window RRC + TimeOut"
    now_rrc, eager_rrc = "RRC, kernel (default)", "RRC, eager PyTorch"
    now_pair, eager_pair = "RRC + TimeOut, pipeline, kernel (default)", "RRC + TimeOut, pipeline, eager PyTorch"
    variants: dict[str, Callable[[], object]] = {
        now_rrc: lambda: new(x, gen),
        eager_rrc: eager(lambda: new(x, gen)),
        "RRC, previous": lambda: old(x, gen),
        "RRC, grid_sample (tried)": lambda: grid(x, gen),
        now_pair: lambda: pipe(x, gen),
        eager_pair: eager(lambda: pipe(x, gen)),
        "RRC + TimeOut, kernel, steps called separately": lambda: timeout(new(x, gen), gen),
        "RRC + TimeOut, previous": lambda: old_timeout(old(x, gen), gen),
        "RRC + TimeOut, grid_sample with TimeOut folded in (tried)": lambda: grid_pair(x, gen),
        rrc_ref: lambda: np_loop([np_random_resized_crop])(x_np, rng),
        pair_ref: lambda: np_loop([np_random_resized_crop, np_timeout])(x_np, rng),
    }
    header(f"RandomResizedCrop: batch {args.batch} x 12 x {args.length}, {args.threads} torch thread(s)")
    with LoadSampler() as load, torch.no_grad():
        print(check_agreement(x, new, old, pipe, old_timeout, grid_pair))
        print()
        for phase in ("default malloc", "malloc trim/mmap thresholds raised (freed memory kept: no page faults)"):
            if phase != "default malloc":
                if not keep_freed_memory():
                    print("(mallopt unavailable: no second table)")
                    break
                print()
            times = timed_rounds(variants, args.rounds, args.numpy_every)
            med = {n: statistics.median(w for w, _ in v) for n, v in times.items()}
            cpu = {n: statistics.median(c for _, c in v) for n, v in times.items()}
            rows = []
            for n in variants:
                ref = pair_ref if "TimeOut" in n else rrc_ref
                rows.append([n, f"{med[n] * 1e3:.1f}", f"{min(w for w, _ in times[n]) * 1e3:.1f}",
                             f"{cpu[n] * 1e3:.1f}", f"{args.batch / med[n]:,.0f}", f"{med[ref] / med[n]:.1f}x",
                             f"{cpu[ref] / cpu[n]:.1f}x"])
            print(f"### {phase}")
            print(table(["variant", "ms/batch (median)", "ms/batch (best)", "CPU ms/batch (median)", "windows/s",
                         "speed vs numpy loop (wall)", "(CPU)"], rows))
            wall_speed = med[pair_ref] / med[now_pair]
            cpu_speed = cpu[pair_ref] / cpu[now_pair]
            gain_rrc = med[eager_rrc] / med[now_rrc]
            gain_pair = med[eager_pair] / med[now_pair]
            print()
            print(f"kernel vs eager (median wall): RRC {gain_rrc:.2f}x, RRC + TimeOut {gain_pair:.2f}x faster. "
                  f"RRC + TimeOut pipeline vs the numpy loop: {wall_speed:.1f}x wall, {cpu_speed:.1f}x CPU; "
                  f"target >= {args.target:g}x: {verdict(min(wall_speed, cpu_speed) >= args.target)}")
    print(load.summary())


def timed_rounds(variants: dict[str, Callable[[], object]], rounds: int, numpy_every: int
                 ) -> dict[str, list[tuple[float, float]]]:
    """(wall, process-CPU) seconds per call; one warm-up call each, then `rounds` rotating rounds."""
    names = list(variants)
    times: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for n in names:
        variants[n]()
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            if n.startswith("numpy") and r % numpy_every:
                continue
            w0, c0 = time.perf_counter(), time.process_time()
            variants[n]()
            times[n].append((time.perf_counter() - w0, time.process_time() - c0))
    return times


def keep_freed_memory() -> bool:
    """glibc: keep freed memory in the process (mallopt M_TRIM_THRESHOLD, M_MMAP_THRESHOLD)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_trim_threshold, 2**31 - 1)) and bool(mallopt(m_mmap_threshold, 2**25))


if __name__ == "__main__":
    main()
