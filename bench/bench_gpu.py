"""GPU benchmarks (skipped cleanly, exit status 0, when CUDA is not available).

1. Training step, per encoder/method: CPC (cpc_fc encoder, whole 1000-sample records, batch 32 as in
   the reference README) and SimCLR + xresnet1d50 (250-sample windows, batch 512), each as
   - fp32 eager (the baseline),
   - bf16 autocast eager,
   - bf16 autocast + torch.compile of the encoder (`train.compile=true`, what trials do on GPU).
   All through `Trainer.from_config`, so the numbers include the platform's loader and bookkeeping.
   Reported: ms/step (median of `--steps` timed steps after `--warmup` steps, compile excluded and
   reported separately), windows/s, peak GPU memory (torch.cuda.max_memory_allocated), speed-up.
2. Fractional-GPU packing: the same fixed set of `--trials` tiny SimCLR trials (xresnet1d50 width 16,
   `--trial-steps` steps each) through Ray Tune on this node, with `resources: {gpu: 1/k}` for
   k = 1 (one trial per GPU), 2 and 4 trials per GPU. Reported: wall time, trials/hour, aggregate
   windows/s, speed-up over k = 1.
3. Store sampling: `WindowBatches` over a synthetic store (`--records` records): resident=True (int16
   store copied to the GPU once, windows gathered there) vs host gathering into pinned memory +
   non_blocking copy. Reported: ms/batch, windows/s, and the step time of (1) it is compared with.

    .venv/bin/python bench/bench_gpu.py [--parts step,packing,sampling] [--steps 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np
import torch
from _common import header, table


def cuda_or_exit() -> torch.device:
    if not torch.cuda.is_available():
        print("bench_gpu: CUDA is not available on this machine; GPU benchmarks skipped.")
        sys.exit(0)
    return torch.device("cuda")


def synthetic_store(n_records: int, length: int = 1000, seed: int = 0) -> Any:
    from ecg_tune.data.leads import DEFAULT_ORDER
    from ecg_tune.data.store import SignalStore

    rng = np.random.default_rng(seed)
    data = rng.normal(0, 300, (n_records * length, len(DEFAULT_ORDER))).astype(np.int16)
    offsets = np.arange(n_records, dtype=np.int64) * length
    lengths = np.full(n_records, length, dtype=np.int64)
    return SignalStore(data, offsets, lengths, 1000.0, tuple(DEFAULT_ORDER), 100.0)


# ---------------------------------------------------------------------------------------------------
# 1. training steps


CASES = {
    "CPC (cpc_fc), batch 32 x 1000": {"method.name": "cpc", "encoder.name": "cpc_fc", "train.batch_size": 32,
                                       "augment.pipeline": ""},
    "SimCLR + xresnet1d50, batch 512 x 250": {"method.name": "simclr", "encoder.name": "xresnet1d50",
                                              "train.batch_size": 512},
}
MODES = {"fp32 eager": ("fp32", False), "bf16 eager": ("bf16", False), "bf16 + torch.compile": ("bf16", True)}


def time_steps(cfg_flat: dict[str, Any], precision: str, compile_: bool, store: Any, device: torch.device,
               warmup: int, steps: int) -> dict[str, float]:
    from ecg_tune.config import TrialConfig
    from ecg_tune.ssl.train import Trainer

    flat = {**cfg_flat, "train.precision": precision, "train.compile": compile_, "train.steps_per_epoch": 1,
            "train.epochs": 100_000, "optim.warmup_epochs": 0, "seed": 0}
    trainer = Trainer.from_config(TrialConfig.from_flat(flat), store, np.arange(len(store)),
                                  lead_names=store.lead_names, device=device)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    trainer.train_epoch()  # first step: includes compilation when compiling
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    for _ in range(warmup):
        trainer.train_epoch()
    torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        trainer.train_epoch()  # one step per epoch; train_epoch synchronises before returning
        times.append(time.perf_counter() - t0)
    batch = trainer.batches.batch_size
    med = statistics.median(times)
    return {"ms": med * 1e3, "windows_s": batch / med, "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30,
            "first_s": first}


def part_step(args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    store = synthetic_store(4096)
    rows = []
    step_ms = {}
    for case, flat in CASES.items():
        base = None
        for mode, (precision, compile_) in MODES.items():
            r = time_steps(flat, precision, compile_, store, device, args.warmup, args.steps)
            base = base or r["ms"]
            step_ms[(case, mode)] = r["ms"]
            rows.append([case, mode, f"{r['ms']:.1f}", f"{r['windows_s']:,.0f}", f"{r['peak_gib']:.2f}",
                         f"{r['first_s']:.1f}", f"{base / r['ms']:.2f}x"])
    print("### 1. Training step: bf16 autocast and torch.compile vs fp32 eager")
    print()
    print(table(["case", "mode", "ms/step (median)", "windows/s", "peak GPU GiB", "first step s (incl. compile)",
                 "speed-up vs fp32 eager"], rows))
    print()
    return step_ms


# ---------------------------------------------------------------------------------------------------
# 2. fractional-GPU packing


def _packed_trial(config: dict[str, Any], store: Any = None) -> None:
    from ray import tune

    from ecg_tune.config import TrialConfig
    from ecg_tune.ssl.train import Trainer

    flat = {"method.name": "simclr", "encoder.name": "xresnet1d50", "encoder.width": 16, "train.batch_size": 256,
            "train.steps_per_epoch": config["steps"], "train.epochs": 1, "train.precision": "bf16",
            "optim.lr": config["lr"], "seed": 0}
    trainer = Trainer.from_config(TrialConfig.from_flat(flat), store, np.arange(len(store)),
                                  lead_names=store.lead_names, device="cuda")
    metrics = trainer.train_epoch()
    tune.report({"windows_per_s": metrics["windows_per_s"], "epoch_time_s": metrics["epoch_time_s"]})


def part_packing(args: argparse.Namespace) -> None:
    import ray
    from ray import tune

    store = synthetic_store(4096)
    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    rows = []
    base = None
    try:
        for per_gpu in (1, 2, 4):
            fn = tune.with_resources(tune.with_parameters(_packed_trial, store=store), {"cpu": 1, "gpu": 1 / per_gpu})
            tuner = tune.Tuner(
                fn,
                param_space={"steps": args.trial_steps, "lr": tune.grid_search([1e-3 * (i + 1) for i in range(args.trials)])},
                tune_config=tune.TuneConfig(reuse_actors=True),
                run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(prefix="ecg-tune-gpu-"), verbose=0),
            )
            t0 = time.perf_counter()
            grid = tuner.fit()
            wall = time.perf_counter() - t0
            windows = args.trials * args.trial_steps * 256
            base = base or wall
            rows.append([f"{per_gpu} per GPU (gpu={1 / per_gpu:g})", f"{wall:.0f}", f"{args.trials / wall * 3600:.0f}",
                         f"{windows / wall:,.0f}", grid.num_errors, f"{base / wall:.2f}x"])
    finally:
        ray.shutdown()
    print(f"### 2. Fractional-GPU packing: {args.trials} trials x {args.trial_steps} steps (xresnet1d50 width 16, batch 256, bf16)")
    print()
    print(table(["trials per GPU", "wall s", "trials/hour", "aggregate windows/s", "errors", "speed-up vs 1 per GPU"], rows))
    print()


# ---------------------------------------------------------------------------------------------------
# 3. store sampling on the GPU vs host


def part_sampling(args: argparse.Namespace, device: torch.device, step_ms: dict[str, float]) -> None:
    from ecg_tune.ssl.loader import WindowBatches

    store = synthetic_store(args.records)
    rows = []
    for label, resident in (("host gather + pinned copy", False), ("GPU-resident store (resident=True)", True)):
        batches = WindowBatches(store, np.arange(len(store)), window=250, batch_size=512, seed=0, device=device,
                                resident=resident, steps_per_epoch=args.sampling_batches)
        for _ in batches.epoch(0):  # warm-up (and the resident copy)
            pass
        times = []
        for epoch in range(1, 4):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for b in batches.epoch(epoch):
                b.x.sum()  # consume it on the device
            torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) / len(batches))
        med = statistics.median(times)
        rows.append([label, f"{med * 1e3:.3f}", f"{512 / med:,.0f}"])
    print(f"### 3. Window sampling, batch 512 x 12 x 250 from {args.records} records")
    print()
    print(table(["loader", "ms/batch (median of 3 epochs)", "windows/s"], rows))
    ref = step_ms.get(("SimCLR + xresnet1d50, batch 512 x 250", "bf16 + torch.compile"))
    if ref:
        print(f"\n(for scale: one bf16 + compile SimCLR step at batch 512 takes {ref:.1f} ms)")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="step,packing,sampling")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--trial-steps", type=int, default=200)
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--sampling-batches", type=int, default=100)
    args = parser.parse_args()
    device = cuda_or_exit()
    header(f"GPU: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    step_ms: dict[str, float] = {}
    if "step" in args.parts:
        step_ms = part_step(args, device)
    if "packing" in args.parts:
        part_packing(args)
    if "sampling" in args.parts:
        part_sampling(args, device, step_ms)


if __name__ == "__main__":
    main()
