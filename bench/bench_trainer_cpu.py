"""Trainer overhead measured in CPU time, plus where the Trainer's extra time goes (cProfile).

Companion to bench/bench_trainer.py (same model, batches and optimiser settings: SimCLR +
xresnet1d50, RandomResizedCrop + TimeOut, batch 256 x 12 x 250): on a loaded shared machine the wall
clock of a 2-second CPU step varies by 2-3x between rounds, which drowns a 5 % difference. With one
torch thread, process CPU time per step is much steadier. Rounds alternate the order (bare, Trainer /
Trainer, bare) so neither loop always runs first.

The profile then runs the Trainer alone and lists its own per-step work outside the model
(window gather, lr schedule, method hooks, metric bookkeeping, finite-loss check) next to the
model's forward/backward/optimiser time, so any overhead is attributed to a function.

    .venv/bin/python bench/bench_trainer_cpu.py [--rounds 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import pstats
import statistics
import time

import numpy as np
import torch
from _common import LoadSampler, header, table, verdict
from bench_trainer import random_store

from ecg_tune.config import TrialConfig
from ecg_tune.data.leads import DEFAULT_ORDER
from ecg_tune.ssl.methods.base import Batch
from ecg_tune.ssl.train import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile-steps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    store = random_store(args.batch_size * 2, 1000, seed=0)
    cfg = TrialConfig.from_flat({
        "method.name": "simclr", "encoder.name": "xresnet1d50", "train.batch_size": args.batch_size,
        "train.steps_per_epoch": 1, "train.epochs": 10_000, "train.precision": "fp32",
        "optim.warmup_epochs": 0, "seed": 0,
    })
    trainer = Trainer.from_config(cfg, store, np.arange(len(store)), lead_names=DEFAULT_ORDER, device="cpu")
    method = copy.deepcopy(trainer.method)
    augment = copy.deepcopy(trainer.augment)
    generator = torch.Generator().manual_seed(1)
    optimizer = torch.optim.Adam(method.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    batch_x = next(iter(trainer.batches.epoch(999))).x

    def bare_step() -> None:
        method.train()
        loss, _ = method.training_step(Batch(batch_x), lambda v: augment(v, generator))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def trainer_step() -> None:
        trainer.train_epoch()  # one step per epoch (steps_per_epoch=1)

    header(f"Trainer vs bare loop in CPU time: batch {args.batch_size}, {args.threads} thread(s), {args.rounds} rounds")
    bare_step(), trainer_step()
    cpu: dict[str, list[float]] = {"bare": [], "trainer": []}
    wall: dict[str, list[float]] = {"bare": [], "trainer": []}
    with LoadSampler() as load:
        for r in range(args.rounds):
            order = [("bare", bare_step), ("trainer", trainer_step)]
            for name, fn in order if r % 2 == 0 else order[::-1]:
                w0, c0 = time.perf_counter(), time.process_time()
                fn()
                wall[name].append(time.perf_counter() - w0)
                cpu[name].append(time.process_time() - c0)
    rows = []
    for name in ("bare", "trainer"):
        rows.append([
            "bare PyTorch loop" if name == "bare" else "Trainer",
            f"{statistics.median(cpu[name]) * 1e3:.0f}", f"{min(cpu[name]) * 1e3:.0f}",
            f"{statistics.median(wall[name]) * 1e3:.0f}", f"{min(wall[name]) * 1e3:.0f}",
        ])
    print(table(["loop", "CPU ms/step (median)", "CPU ms/step (min)", "wall ms/step (median)", "wall ms/step (min)"], rows))
    ratio_cpu = statistics.median(cpu["trainer"]) / statistics.median(cpu["bare"])
    ratio_min = min(cpu["trainer"]) / min(cpu["bare"])
    paired = statistics.median(t / b for t, b in zip(cpu["trainer"], cpu["bare"]))
    print()
    print(f"Trainer / bare, CPU time: median {ratio_cpu:.3f}, min {ratio_min:.3f}, median of per-round ratios "
          f"{paired:.3f}; target <= 1.05: {verdict(paired <= 1.05)}")
    print(load.summary())

    # Where the Trainer's time goes.
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(args.profile_steps):
        trainer.train_epoch()
    prof.disable()
    stats = pstats.Stats(prof)
    total = stats.total_tt
    parts = {
        "model: training_step (augment + forward + loss)": ("ssl/methods", "training_step"),
        "model: backward": ("torch/_tensor.py", "backward"),
        "optimiser step (Adam)": ("torch/optim/optimizer.py", "wrapper"),
        "window gather (WindowBatches.epoch)": ("ssl/loader.py", "epoch"),
        "lr schedule step": ("ssl/train.py", "_step_schedule"),
        "method.on_step_end": ("ssl/methods", "on_step_end"),
        "finite-loss check": ("ssl/train.py", "_check_finite"),
        "zero_grad": ("torch/optim/optimizer.py", "zero_grad"),
    }
    found = {}
    for (file, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():
        for label, (f_part, f_name) in parts.items():
            if f_part in file and func == f_name:
                found[label] = found.get(label, 0.0) + ct
    print()
    print(f"cProfile of {args.profile_steps} Trainer steps ({total:.2f} s profiled CPU; cumulative time per part):")
    print()
    print(table(["part", "ms/step", "share"], [[k, f"{v / args.profile_steps * 1e3:.1f}", f"{v / total:.2%}"]
                                              for k, v in sorted(found.items(), key=lambda kv: -kv[1])]))
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(r"ecg_tune", 12)
    print()
    print("```")
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[-2500:])
    print("```")


if __name__ == "__main__":
    main()
