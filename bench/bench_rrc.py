"""RandomResizedCrop on CPU: the sort-free version now in the package vs the previous argsort version
vs the per-window numpy loop, alone and followed by TimeOut (the paper's default pipeline).

The previous version (argsort of random integer keys to pick the placed positions) is kept below,
verbatim apart from its name, so that both run in the same process on the same batches. Rounds
alternate over the variants in rotating order; the table gives the median and best wall time and the
median process-CPU time per batch, and throughput ratios against the numpy loop.

    .venv/bin/python bench/bench_rrc.py [--batch 1024] [--threads 1] [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from _common import LoadSampler, header, table, verdict
from bench_augment import np_loop, np_random_resized_crop, np_timeout
from ecg_tune.ssl.augment import build_pipeline
from ecg_tune.ssl.augment.random_resized_crop import RandomResizedCrop, RandomResizedCropParams, lerp_at
from ecg_tune.ssl.augment.timeout import TimeOut, TimeOutParams


class ArgsortResizedCrop(RandomResizedCrop):
    """The previous implementation: placed positions = the `crop` smallest of random integer keys."""

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
        keys = torch.randint(0, 2**31 - 1, (batch, length), generator=generator, device=dev, dtype=torch.int32)
        keys[:, 0] = -1
        keys[:, -1] = -1
        t = torch.arange(length, device=dev)
        taken = t.unsqueeze(0) < crop.unsqueeze(1)
        placed = torch.zeros_like(taken).scatter_(1, keys.argsort(dim=1), taken)
        index = placed.cumsum(dim=1) - 1
        prev = torch.where(placed, t, 0).cummax(dim=1).values
        nxt = torch.where(placed, t, length).flip(1).cummin(dim=1).values.flip(1)
        frac = (t - prev).to(work.dtype) / (nxt - prev).clamp(min=1)
        return lerp_at(work, start.unsqueeze(1) + index, frac).to(x.dtype)


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
    old = ArgsortResizedCrop(RandomResizedCropParams(), fs)
    timeout = TimeOut(TimeOutParams(), fs)
    pipe = build_pipeline(["random_resized_crop", "timeout"], None, fs)
    assert type(pipe.steps[0]) is RandomResizedCrop  # the package's pipeline uses the new version

    variants: dict[str, Callable[[], object]] = {
        "torch RRC, sort-free (now)": lambda: new(x, gen),
        "torch RRC, argsort (before)": lambda: old(x, gen),
        "torch RRC + TimeOut, sort-free (now)": lambda: timeout(new(x, gen), gen),
        "torch RRC + TimeOut, argsort (before)": lambda: timeout(old(x, gen), gen),
        "numpy per-window RRC": lambda: np_loop([np_random_resized_crop])(x_np, rng),
        "numpy per-window RRC + TimeOut": lambda: np_loop([np_random_resized_crop, np_timeout])(x_np, rng),
    }
    header(f"RandomResizedCrop: batch {args.batch} x 12 x {args.length}, {args.threads} torch thread(s)")
    names = list(variants)
    times: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    with LoadSampler() as load, torch.no_grad():
        for n in names:
            variants[n]()
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for n in order:
                if n.startswith("numpy") and r % args.numpy_every:
                    continue
                w0, c0 = time.perf_counter(), time.process_time()
                variants[n]()
                times[n].append((time.perf_counter() - w0, time.process_time() - c0))
    med = {n: statistics.median(w for w, _ in v) for n, v in times.items()}
    cpu = {n: statistics.median(c for _, c in v) for n, v in times.items()}
    rows = []
    for n in names:
        ref = "numpy per-window RRC + TimeOut" if "TimeOut" in n else "numpy per-window RRC"
        rows.append([n, f"{med[n] * 1e3:.1f}", f"{min(w for w, _ in times[n]) * 1e3:.1f}", f"{cpu[n] * 1e3:.1f}",
                     f"{args.batch / med[n]:,.0f}", f"{med[ref] / med[n]:.1f}x", f"{cpu[ref] / cpu[n]:.1f}x"])
    print(table(["variant", "ms/batch (median)", "ms/batch (best)", "CPU ms/batch (median)", "windows/s",
                 "speed vs numpy loop (wall)", "(CPU)"], rows))
    speed = med["numpy per-window RRC + TimeOut"] / med["torch RRC + TimeOut, sort-free (now)"]
    gain = med["torch RRC, argsort (before)"] / med["torch RRC, sort-free (now)"]
    print()
    print(f"RRC sort-free vs argsort: {gain:.2f}x faster (median wall). RRC + TimeOut vs the numpy loop: "
          f"{speed:.1f}x; target >= {args.target:g}x: {verdict(speed >= args.target)}")
    print(load.summary())


if __name__ == "__main__":
    main()
