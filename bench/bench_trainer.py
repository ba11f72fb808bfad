"""Trainer overhead: ms/step of `Trainer` vs a bare PyTorch loop on the same model and batches.

Both loops train SimCLR + xresnet1d50 (paper defaults, augmentations RandomResizedCrop + TimeOut) on
batches of 256 x 12 leads x 250 samples. The bare loop gets its batches pre-built and does only
augment -> training_step -> zero_grad -> backward -> step; the Trainer additionally gathers windows
from the store, steps the lr schedule, calls the method hooks, accumulates metrics and checks the loss.
Rounds alternate between the two loops (one step each by default) so that drifting machine load hits
both alike; the table shows the median and minimum over rounds and the median of the per-round
ratios. Target: Trainer within 5% of the bare loop.

    .venv/bin/python bench/bench_trainer.py                      # CPU, 1 step x 10 rounds
    .venv/bin/python bench/bench_trainer.py --threads 1          # on a busy shared box
    .venv/bin/python bench/bench_trainer.py --device cuda --steps 20 --rounds 5
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch

from ecg_tune.config import TrialConfig
from ecg_tune.data.leads import DEFAULT_ORDER
from ecg_tune.data.store import SignalStore
from ecg_tune.ssl.methods.base import Batch
from ecg_tune.ssl.train import Trainer


def random_store(n_records: int, length: int, seed: int) -> SignalStore:
    rng = np.random.default_rng(seed)
    signals = [rng.normal(0, 0.3, (len(DEFAULT_ORDER), length)).astype(np.float32) for _ in range(n_records)]
    return SignalStore.from_signals(signals, DEFAULT_ORDER, fs=100.0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=1, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    parser.add_argument("--precision", default="fp32", help="trainer precision (the bare loop matches it)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    store = random_store(args.batch_size * 2, 1000, seed=0)
    cfg = TrialConfig.from_flat(
        {
            "method.name": "simclr",
            "encoder.name": "xresnet1d50",
            "train.batch_size": args.batch_size,
            "train.steps_per_epoch": args.steps,
            "train.epochs": 10_000,  # long schedule: lr stays near its peak during the benchmark
            "train.precision": args.precision,
            "optim.warmup_epochs": 0,
            "seed": 0,
        }
    )
    trainer = Trainer.from_config(cfg, store, np.arange(len(store)), lead_names=DEFAULT_ORDER, device=device)

    # The bare loop: its own copy of the same (initial) model, optimiser and augmentations.
    method = copy.deepcopy(trainer.method)
    augment = copy.deepcopy(trainer.augment)
    generator = torch.Generator(device=device).manual_seed(1)
    optimizer = torch.optim.Adam(method.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    batches = [b.x for b in trainer.batches.epoch(999)]
    autocast = trainer._autocast

    def bare_round() -> float:
        method.train()
        sync(device)
        start = time.perf_counter()
        for x in batches:
            with autocast():
                loss, _ = method.training_step(Batch(x), lambda v: augment(v, generator))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        sync(device)
        return (time.perf_counter() - start) / len(batches)

    def trainer_round() -> float:
        metrics = trainer.train_epoch()  # synchronises the device before timing the epoch
        return metrics["epoch_time_s"] / len(trainer.batches)

    bare_round(), trainer_round()  # warm-up: allocator, kernels, lazy imports
    bare, ours = [], []
    for _ in range(args.rounds):
        bare.append(bare_round())
        ours.append(trainer_round())

    ref = statistics.median(bare)
    paired = statistics.median(o / b for o, b in zip(ours, bare))
    print(
        f"device {device}, threads {torch.get_num_threads()}, batch {args.batch_size}x12x250, "
        f"{args.steps} steps x {args.rounds} rounds, precision {trainer.precision}"
    )
    print("| loop | median ms/step | min ms/step | ratio (median) |\n|---|---|---|---|")
    for name, times in (("bare PyTorch loop", bare), ("Trainer", ours)):
        med = statistics.median(times)
        print(f"| {name} | {med * 1e3:.1f} | {min(times) * 1e3:.1f} | {med / ref:.3f} |")
    print(f"median of per-round ratios Trainer/bare: {paired:.3f}")
    # The Trainer's main extra work, timed alone (noise-free even on a busy machine).
    sync(device)
    start = time.perf_counter()
    n = sum(1 for _ in range(5) for _ in trainer.batches.epoch(0))
    sync(device)
    print(f"window gather alone: {(time.perf_counter() - start) / n * 1e3:.2f} ms/batch")


if __name__ == "__main__":
    main()
