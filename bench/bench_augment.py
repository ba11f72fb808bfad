"""Throughput of the batched torch augmentations against a plain per-window numpy loop.

The numpy side implements the same transforms the way a per-sample dataset transform would (one
window at a time, numpy vectorised inside a window, like the reference's Dataset transforms).

    .venv/bin/python bench/bench_augment.py [--batch 1024] [--device cpu|cuda] [--threads N]

Timings are the best of a few repeats (wall clock); on a shared machine, other processes' load
lowers both columns, multi-threaded torch most (run with --threads 1 to compare single cores).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch

from ecg_tune.ssl.augment import build_pipeline, physiological_noise

FS = 100.0
L2 = (0.1, 0.5, 0.2, 1.0)  # (bw, em, pl, bs) maxima: noise level L2 = pretraining noise defaults


# --- per-window numpy versions (x: (leads, T)) --------------------------------------------------


def np_random_resized_crop(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    leads, length = x.shape
    crop = max(2, int(rng.uniform(0.5, 1.0) * length))
    start = rng.integers(0, length - crop + 1)
    window = x[:, start : start + crop]
    inner = np.sort(rng.choice(np.arange(1, length - 1), size=crop - 2, replace=False))
    placed = np.concatenate([[0], inner, [length - 1]])
    t = np.arange(length)
    return np.stack([np.interp(t, placed, window[lead]) for lead in range(leads)])


def np_timeout(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    length = x.shape[1]
    size = int(rng.uniform(0.2, 0.4) * length)
    start = rng.integers(0, length - size + 1)
    out = x.copy()
    out[:, start : start + size] = 0
    return out


def np_baseline_wander(x: np.ndarray, rng: np.random.Generator, cmax: float = L2[0]) -> np.ndarray:
    leads, length = x.shape
    t = np.arange(length) / FS
    freqs = np.arange(50) * 0.01
    c = rng.uniform(0, cmax)
    a = rng.uniform(0, 1, (leads, 50, 1))
    phi = rng.uniform(0, 2 * np.pi, (leads, 50, 1))
    return x + c * (a * np.cos(2 * np.pi * freqs[:, None] * t + phi)).sum(axis=1)


def np_powerline(x: np.ndarray, rng: np.random.Generator, cmax: float = L2[2]) -> np.ndarray:
    leads, length = x.shape
    t = np.arange(length) / FS
    c, phi = rng.uniform(0, cmax), rng.uniform(0, 2 * np.pi)
    hum = np.zeros(length)
    for k in range(1, 4):
        a = rng.uniform(0, 1)
        if k * 50.0 <= FS / 2:
            hum += a * np.cos(2 * np.pi * k * 50.0 * t + phi)
    return x + c * rng.uniform(-1, 1, (leads, 1)) * hum


def np_em(x: np.ndarray, rng: np.random.Generator, cmax: float = L2[1]) -> np.ndarray:
    return x + rng.normal(0, rng.uniform(0, cmax), x.shape)


def np_baseline_shift(x: np.ndarray, rng: np.random.Generator, cmax: float = L2[3]) -> np.ndarray:
    leads, length = x.shape
    step = np.zeros(length)
    for _ in range(rng.integers(0, int(0.3 * length / FS + 0.5) + 1)):
        mid = rng.integers(0, length)
        half = 0.5 * FS * rng.normal(3.0, 0.6)
        left, right = max(0, int(mid - half)), min(length - 1, int(mid + half))
        step[left : right + 1] = rng.uniform(-1, 1)
    gain = rng.choice([-1.0, 1.0], (leads, 1)) * rng.normal(1, 1, (leads, 1))
    return x + rng.uniform(0, cmax) * gain * step


def np_loop(steps: list[Callable]) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    def run(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = np.empty_like(batch)
        for i, window in enumerate(batch):
            for step in steps:
                window = step(window, rng)
            out[i] = window
        return out

    return run


# --- timing ---------------------------------------------------------------------------------------


def best_seconds(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> tuple[float, float]:
    """Best wall-clock and best process-CPU seconds of `repeats` calls after one warm-up call.

    CPU seconds (all threads of this process) are less sensitive to other processes' load than wall
    clock, so the ratio of CPU throughputs is the more stable comparison on a shared machine.
    """
    fn()  # warm-up (allocations, kernel selection)
    sync()
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        sync()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return min(wall), min(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--leads", type=int, default=12)
    parser.add_argument("--length", type=int, default=250)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--numpy-repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    x = torch.randn(args.batch, args.leads, args.length, device=device) * 0.3
    x_np = x.cpu().numpy()
    gen = torch.Generator(device=device).manual_seed(0)
    rng = np.random.default_rng(0)

    cases = [
        (
            "random_resized_crop + timeout",
            build_pipeline(["random_resized_crop", "timeout"], None, FS),
            np_loop([np_random_resized_crop, np_timeout]),
        ),
        (
            "physiological noise (bw, pl, em, bs; L2)",
            physiological_noise(L2, FS),
            np_loop([np_baseline_wander, np_powerline, np_em, np_baseline_shift]),
        ),
    ]
    print(
        f"batch {args.batch} x {args.leads} leads x {args.length} samples, device {device}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        "| pipeline | torch windows/s | numpy loop windows/s | ratio | torch windows/CPU-s | numpy windows/CPU-s | CPU ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, pipe, loop in cases:
        with torch.no_grad():
            wall_t, cpu_t = best_seconds(partial(pipe, x, gen), args.repeats, sync)
        wall_n, cpu_n = best_seconds(partial(loop, x_np, rng), args.numpy_repeats, lambda: None)
        n = args.batch
        print(
            f"| {label} | {n / wall_t:,.0f} | {n / wall_n:,.0f} | {wall_n / wall_t:.1f}x "
            f"| {n / cpu_t:,.0f} | {n / cpu_n:,.0f} | {cpu_n / cpu_t:.1f}x |"
        )


if __name__ == "__main__":
    main()
