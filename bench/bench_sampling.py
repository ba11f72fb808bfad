"""Training-time window sampling and the memory of concurrent trials.

Part 1, throughput (`--part speed`): random 250-sample windows, batches of 256 x 12 leads, from a
synthetic shard dataset opened with `open_dataset`:

- ours: `ecg_tune.data.windows.random_windows` on the `SignalStore` (one vectorised gather from the
  int16 array, float32 mV out) and `ecg_tune.ssl.loader.WindowBatches` (the same plus torch tensors,
  what the trainer iterates);
- the reference code's approach (tmehari/ecg-selfsupervised `TimeseriesDatasetCrops` in memmap
  mode): one float32 memmap of all records + a start/length index, `__getitem__` reopens the memmap,
  picks a random start and copies one crop, a Python loop over the batch and a collate (`torch.stack`);
  also the same loop with the memmap held open (kinder to the reference);
- the strongest plain alternative: one vectorised fancy-index gather from the float32 memmap.

Rounds alternate over the variants (in rotating order) so that drifting machine load hits all alike;
each round times `--batches` batches; the table gives the median and best per-batch wall time and the
median per-batch CPU time. All variants read from the page cache / RAM (warm), single-threaded.

Part 2, memory (`--part memory`): k = 1, 2, 4 concurrent Ray trials on one node, each touching every
sample of the store, then holding still while the driver reads PSS/USS of every trial worker with
psutil `memory_full_info()`:

- shared: the dataset is opened once in the driver and handed to the trials with
  `tune.with_parameters(fn, data=SweepData(...))`, as `ecg_tune.tune.sweep` does (Ray's object store
  maps the numpy arrays zero-copy into each worker);
- naive: each trial calls `open_dataset(path)` itself;
- empty: trials get no dataset (the cost of a trial process itself, subtracted from the others).

"Extra memory per extra trial" is the slope over k of the summed PSS of the whole session (the
driver and every process it started: GCS, raylet, object store, trial workers; PSS splits shared
pages among their mappers, so the sum counts each page once), minus the same slope for empty trials,
as a share of the dataset's in-memory size. Target: < 10 %. All trials import
`ecg_tune.tune.trainable` (torch etc.), as real trials do.

    .venv/bin/python bench/bench_sampling.py [--records 20000] [--part speed|memory|all] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import LoadSampler, header, table, verdict

WINDOW = 250
BATCH = 256


def dataset_path(n_records: int, workdir: Path) -> Path:
    from ecg_tune.data.synthetic import write_synthetic

    out = workdir / f"synth-{n_records}"
    if not (out / "manifest.json").is_file():
        print(f"writing {n_records} synthetic records to {out} ...", flush=True)
        write_synthetic(out, n_records=n_records, seed=0)
    return out


# ---------------------------------------------------------------------------------------------------
# Part 1: throughput


class ReferenceCrops:
    """The reference's memmap dataset: float32 (total_samples, leads) file + start/length index."""

    def __init__(self, path: Path, shape: tuple[int, int], starts: np.ndarray, lengths: np.ndarray, reopen: bool):
        self.path, self.shape, self.reopen = str(path), shape, reopen
        self.starts, self.lengths = starts, lengths
        self.mm = np.memmap(self.path, np.float32, mode="r", shape=shape)

    def __getitem__(self, i: int) -> Any:
        import torch

        length = int(self.lengths[i])
        start = random.randint(0, length - WINDOW)
        mm = np.memmap(self.path, np.float32, mode="r", shape=self.shape) if self.reopen else self.mm
        crop = np.copy(mm[self.starts[i] + start : self.starts[i] + start + WINDOW])
        del mm
        return torch.from_numpy(crop.T)  # ToTensor: (leads, time)

    def batch(self, idx: np.ndarray) -> Any:
        import torch

        return torch.stack([self[int(i)] for i in idx])  # default_collate


def part_speed(args: argparse.Namespace, path: Path, workdir: Path) -> None:
    import torch

    from ecg_tune.data import open_dataset
    from ecg_tune.data.windows import random_windows
    from ecg_tune.ssl.loader import WindowBatches

    ds = open_dataset(path)
    store = ds.store
    n = len(ds)
    mm_path = workdir / f"synth-{n}.float32.memmap"
    if not mm_path.is_file() or mm_path.stat().st_size != store.data.size * 4:
        mm = np.memmap(mm_path, np.float32, mode="w+", shape=store.data.shape)
        for a in range(0, store.data.shape[0], 1 << 20):
            mm[a : a + (1 << 20)] = store.data[a : a + (1 << 20)] / np.float32(store.units_per_mv)
        mm.flush()
        del mm
    ref_reopen = ReferenceCrops(mm_path, store.data.shape, store.offsets, store.lengths, reopen=True)
    ref_open = ReferenceCrops(mm_path, store.data.shape, store.offsets, store.lengths, reopen=False)
    mm = ref_open.mm
    _ = float(np.asarray(mm[:: 4096]).sum())  # fault the mapping in once

    rng = np.random.default_rng(0)
    random.seed(0)
    indices = np.arange(n)
    batches = WindowBatches(store, indices, window=WINDOW, batch_size=BATCH, seed=0)
    epoch_iter = [batches.epoch(0)]
    epoch_no = [0]

    def next_idx() -> np.ndarray:
        return rng.integers(0, n, BATCH)

    def ours_windows() -> Any:
        return random_windows(store, next_idx(), WINDOW, rng)

    def ours_loader() -> Any:
        try:
            return next(epoch_iter[0]).x
        except StopIteration:
            epoch_no[0] += 1
            epoch_iter[0] = batches.epoch(epoch_no[0])
            return next(epoch_iter[0]).x

    def memmap_gather() -> Any:
        idx = next_idx()
        starts = rng.integers(0, store.lengths[idx] - WINDOW + 1)
        rows = (store.offsets[idx] + starts)[:, None] + np.arange(WINDOW)
        return torch.from_numpy(np.ascontiguousarray(mm[rows].transpose(0, 2, 1)))

    variants = {
        "ours: random_windows (numpy out)": ours_windows,
        "ours: WindowBatches (torch out)": ours_loader,
        "reference: per-sample loop, memmap reopened per item": lambda: ref_reopen.batch(next_idx()),
        "per-sample loop, memmap held open": lambda: ref_open.batch(next_idx()),
        "vectorised memmap gather (float32)": memmap_gather,
    }
    # Same output for the same starts: ours and the memmap agree to the float32 rounding of 1/1000 steps.
    check_idx = np.arange(0, n, max(1, n // 50))
    starts = np.zeros(len(check_idx), dtype=np.int64)
    from ecg_tune.data.windows import gather_windows

    a = gather_windows(store, check_idx, starts, WINDOW)
    b = np.stack([np.asarray(mm[store.offsets[i] : store.offsets[i] + WINDOW]).T for i in check_idx])
    assert np.allclose(a, b, atol=1e-6), "store and memmap disagree"

    names = list(variants)
    per_batch: dict[str, list[tuple[float, float]]] = {k: [] for k in names}
    for name in names:  # warm-up
        for _ in range(3):
            variants[name]()
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            fn = variants[name]
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.batches):
                fn()
            per_batch[name].append(((time.perf_counter() - w0) / args.batches, (time.process_time() - c0) / args.batches))
    ref_name = "reference: per-sample loop, memmap reopened per item"
    open_name = "per-sample loop, memmap held open"
    vec_name = "vectorised memmap gather (float32)"
    med = {k: statistics.median(w for w, _ in v) for k, v in per_batch.items()}
    rows = []
    for name in names:
        walls = [w for w, _ in per_batch[name]]
        cpus = [c for _, c in per_batch[name]]
        rows.append([
            name, f"{med[name] * 1e3:.2f}", f"{min(walls) * 1e3:.2f}", f"{statistics.median(cpus) * 1e3:.2f}",
            f"{BATCH / med[name]:,.0f}", f"{med[ref_name] / med[name]:.1f}x", f"{med[vec_name] / med[name]:.2f}x",
        ])
    print(f"### Sampling throughput: {n} records, batch {BATCH} x 12 leads x {WINDOW} samples, "
          f"{args.rounds} alternating rounds of {args.batches} batches, torch threads {torch.get_num_threads()}")
    print(f"store {store.nbytes / 2**20:.0f} MiB int16 in RAM; memmap {mm_path.stat().st_size / 2**20:.0f} MiB float32 (page cache)")
    print()
    print(table(["variant", "ms/batch (median)", "ms/batch (best)", "CPU ms/batch (median)", "windows/s",
                 "speed vs reference per-sample", "speed vs vectorised memmap"], rows))
    for ours in ("ours: random_windows (numpy out)", "ours: WindowBatches (torch out)"):
        r1, r2, r3 = med[ref_name] / med[ours], med[open_name] / med[ours], med[vec_name] / med[ours]
        print(f"- {ours}: {r1:.1f}x the reference per-sample loop (target >= 1.0: {verdict(r1 >= 1.0)}), "
              f"{r2:.1f}x the loop with the memmap held open, {r3:.2f}x the vectorised memmap gather")
    print()


# ---------------------------------------------------------------------------------------------------
# Part 2: memory of k concurrent trials


def _touch(store: Any) -> int:
    """Read every sample of the store (page by page) and some windows, like an epoch would."""
    total = 0
    step = 1 << 18
    for a in range(0, store.data.shape[0], step):
        total += int(store.data[a : a + step, 0].sum(dtype=np.int64))  # touches every page of the block
    return total


def _trial(config: dict[str, Any], data: Any = None) -> None:
    """A trial that touches the dataset, announces itself, and waits for the driver's measurement."""
    from ray import tune

    import ecg_tune.tune.trainable  # noqa: F401  (every real trial imports it: torch, evaluate, ...)

    mode, sync = config["mode"], Path(config["sync"])
    if mode == "naive":
        from ecg_tune.data import open_dataset

        ds = open_dataset(config["path"])
    elif mode == "shared":
        ds = data.get(config["path"])
    else:
        ds = None
    checksum = _touch(ds.store) if ds is not None else 0
    if ds is not None:
        _ = ds.records["record_id"].tolist()  # the metadata too
    me = sync / f"ready-{os.getpid()}"
    me.write_text(json.dumps({"pid": os.getpid(), "checksum": checksum}))
    deadline = time.time() + 300
    while not (sync / "done").exists() and time.time() < deadline:
        time.sleep(0.1)
    tune.report({"checksum": checksum})


def _session_processes() -> list[Any]:
    """This driver and everything it started (gcs_server, raylet and its workers, object store)."""
    import psutil

    me = psutil.Process(os.getpid())
    return [me, *me.children(recursive=True)]


def _measure(pids: list[int]) -> dict[str, float]:
    import psutil

    trial = {"pss": 0.0, "uss": 0.0, "rss": 0.0}
    for pid in pids:
        info = psutil.Process(pid).memory_full_info()
        trial["pss"] += info.pss
        trial["uss"] += info.uss
        trial["rss"] += info.rss
    total = 0.0
    for p in _session_processes():
        try:
            total += p.memory_full_info().pss
        except psutil.Error:
            pass
    trial["session_pss"] = total
    return trial


def run_k(mode: str, k: int, path: Path, data: Any) -> dict[str, float]:
    from ray import tune

    from ecg_tune.tune.trainable import SweepData  # noqa: F401  (what the sweep passes)

    sync = Path(tempfile.mkdtemp(prefix="ecg-tune-mem-"))
    result: dict[str, float] = {}

    def driver_side() -> None:
        deadline = time.time() + 300
        while time.time() < deadline:
            ready = list(sync.glob("ready-*"))
            if len(ready) >= k:
                time.sleep(1.0)  # let the last one settle
                pids = [json.loads(p.read_text())["pid"] for p in ready]
                result.update(_measure(pids))
                break
            time.sleep(0.2)
        (sync / "done").touch()

    watcher = threading.Thread(target=driver_side, daemon=True)
    watcher.start()
    fn = tune.with_parameters(_trial, data=data) if mode == "shared" else _trial
    tuner = tune.Tuner(
        tune.with_resources(fn, {"cpu": 1}),
        param_space={"mode": mode, "sync": str(sync), "path": str(path)},
        tune_config=tune.TuneConfig(num_samples=k, max_concurrent_trials=k, reuse_actors=False),
        run_config=tune.RunConfig(storage_path=str(sync / "ray"), name=f"mem-{mode}-{k}", verbose=0),
    )
    grid = tuner.fit()
    watcher.join(timeout=30)
    if grid.num_errors:
        raise RuntimeError(f"{mode} k={k}: {grid.errors}")
    return result


def part_memory(args: argparse.Namespace, path: Path) -> None:
    import ray

    from ecg_tune.data import open_dataset
    from ecg_tune.tune.trainable import SweepData

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    ks = [int(k) for k in args.ks.split(",")]
    ds = open_dataset(path)
    size = ds.store.nbytes
    data = SweepData({str(path): ds}, sweep_dir="")
    ray.init(num_cpus=max(ks), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    results: dict[tuple[str, int], dict[str, float]] = {}
    try:
        for k in ks:
            for mode in ("empty", "shared", "naive"):
                results[(mode, k)] = run_k(mode, k, path, data)
                print(f"  {mode} k={k}: trial PSS {results[(mode, k)]['pss'] / 2**20:.0f} MiB", flush=True)
    finally:
        ray.shutdown()
    mib = 2**20
    rows = []
    for mode in ("empty", "shared", "naive"):
        for k in ks:
            r = results[(mode, k)]
            rows.append([mode, k, f"{r['pss'] / mib:.0f}", f"{r['uss'] / mib:.0f}", f"{r['rss'] / mib:.0f}",
                         f"{r['session_pss'] / mib:.0f}"])
    print(f"### Memory of k concurrent trials: {len(ds)} records, store {size / mib:.0f} MiB int16")
    print()
    print(table(["mode", "k", "trial workers PSS MiB (sum)", "USS MiB (sum)", "RSS MiB (sum)",
                 "whole session PSS MiB (driver + Ray + trials)"], rows))
    print()

    def slope(mode: str, key: str) -> float:
        xs = np.array(ks, dtype=float)
        ys = np.array([results[(mode, k)][key] for k in ks])
        return float(np.polyfit(xs, ys, 1)[0])

    base = slope("empty", "session_pss")
    for mode in ("shared", "naive"):
        extra = slope(mode, "session_pss") - base
        private = slope(mode, "uss") - slope("empty", "uss")
        share = extra / size
        target = verdict(share < 0.10) if mode == "shared" else "(comparison)"
        print(f"- {mode}: extra memory per extra trial (slope over k of the whole session's PSS, minus that of "
              f"empty trials) {extra / mib:.0f} MiB = {share:.1%} of the dataset (private USS per extra trial "
              f"{private / mib:.0f} MiB); target < 10 %: {target}")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--part", choices=("speed", "memory", "all"), default="all")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batches", type=int, default=10, help="batches per variant per round")
    parser.add_argument("--ks", default="1,2,4")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    workdir = Path(args.workdir or tempfile.gettempdir()) / "ecg-tune-bench-data"
    workdir.mkdir(parents=True, exist_ok=True)
    path = dataset_path(args.records, workdir)
    header(f"Sampling and trial memory: {args.records} synthetic records")
    with LoadSampler() as load:
        if args.part in ("speed", "all"):
            part_speed(args, path, workdir)
        if args.part in ("memory", "all"):
            part_memory(args, path)
    print(load.summary())


if __name__ == "__main__":
    main()
