"""Streaming shards (data.mode stream) vs the in-memory store and the reference's per-sample loop.

Part 1, throughput (`--part speed`): random 250-sample windows, batch 256 x 12 leads, one epoch of a
synthetic corpus, one loader worker (its read-ahead thread included), torch threads 1, warm page cache
(one untimed epoch first):
- ours: `StreamBatches` (ssl/stream_loader.py) over `StreamSource` (data/stream.py), torch out, reading
  the zstd shards, and the same with `data.stream_cache` (shards decoded once to int16, memory-mapped;
  the untimed warm-up epoch fills it);
- in-memory: `WindowBatches` on the `SignalStore` of `open_dataset` (what data.mode memory trains on);
- reference: the per-sample memmap loop of tmehari/ecg-selfsupervised (bench_sampling.ReferenceCrops,
  memmap reopened per item), over the same number of windows.
Targets: streaming >= 50 % of in-memory windows/s and >= 1.0x the reference.

Part 2, memory (`--part memory`): peak RSS (VmHWM of a fresh process, from /proc/self/status) of a
process that opens the corpus for streaming and streams one epoch through `StreamBatches`, at two
corpus sizes, without and with the decoded cache; the same for `open_dataset` (the in-memory store) at
the smaller size. Target: < 15 % difference between the sizes. The large corpus is the small one's
shards tiled (hard links, `--large` a multiple of `--small`; `ecg-tune synth` makes ~120 records per
CPU-second, so 200k records would take ~30 min of the 2 cores) unless `--synth-large`.

    .venv/bin/python bench/bench_stream.py --small 20000 --large 200000 [--workdir /tmp/ecg-stream-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from _common import PYTHON, LoadSampler, bench_env, header, run_timed, table, verdict
from bench_sampling import WINDOW, ReferenceCrops, dataset_path

BATCH = 256
CACHED = "ours: streaming + data.stream_cache (decoded int16)"

STREAM_RSS = """
import sys, torch
torch.set_num_threads(1)
from ecg_tune.data.stream import StreamSource
from ecg_tune.data.stream_corpus import StreamCorpus
from ecg_tune.data.shard_cache import ShardCache
from ecg_tune.ssl.stream_loader import StreamBatches
cache = ShardCache(sys.argv[2]) if len(sys.argv) > 2 else None
source = StreamSource([StreamCorpus.open(sys.argv[1], cache=cache)], buffer=8192)
batches = StreamBatches(source, window=250, batch_size=256, seed=0)
n = sum(b.x.shape[0] for b in batches.epoch(0))
print("windows", n, "vmhwm_kib", open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
"""
MEMORY_RSS = """
import sys
from ecg_tune.data import open_dataset
ds = open_dataset(sys.argv[1])
print("records", len(ds), "vmhwm_kib", open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
"""


def part_speed(path: Path, workdir: Path, rounds: int) -> dict[str, float]:
    import numpy as np
    import torch

    from ecg_tune.data import open_dataset
    from ecg_tune.data.shard_cache import ShardCache
    from ecg_tune.data.stream import StreamSource
    from ecg_tune.data.stream_corpus import StreamCorpus
    from ecg_tune.ssl.loader import WindowBatches
    from ecg_tune.ssl.stream_loader import StreamBatches

    torch.set_num_threads(1)
    ds = open_dataset(path)
    store, n = ds.store, len(ds)
    stream = StreamBatches(StreamSource([StreamCorpus.open(path)], buffer=8192), window=WINDOW, batch_size=BATCH, seed=0)
    cached = StreamBatches(StreamSource([StreamCorpus.open(path, cache=ShardCache(workdir / "cache"))], buffer=8192),
                           window=WINDOW, batch_size=BATCH, seed=0)
    memory = WindowBatches(store, np.arange(n), window=WINDOW, batch_size=BATCH, seed=0)
    mm_path = workdir / f"synth-{n}.float32.memmap"
    if not mm_path.is_file() or mm_path.stat().st_size != store.data.size * 4:
        mm = np.memmap(mm_path, np.float32, mode="w+", shape=store.data.shape)
        for a in range(0, store.data.shape[0], 1 << 20):
            mm[a : a + (1 << 20)] = store.data[a : a + (1 << 20)] / np.float32(store.units_per_mv)
        mm.flush()
        del mm
    ref = ReferenceCrops(mm_path, store.data.shape, store.offsets, store.lengths, reopen=True)
    rng = np.random.default_rng(0)
    ref_batches = max(20, len(memory) // 4)  # the reference is ~15x slower: a quarter epoch

    def run_stream(e: int) -> int:
        return sum(b.x.shape[0] for b in stream.epoch(e))

    def run_cached(e: int) -> int:
        return sum(b.x.shape[0] for b in cached.epoch(e))

    def run_memory(e: int) -> int:
        return sum(b.x.shape[0] for b in memory.epoch(e))

    def run_reference(e: int) -> int:
        return sum(ref.batch(rng.integers(0, n, BATCH)).shape[0] for _ in range(ref_batches))

    variants = {"ours: streaming (StreamBatches, 1 worker)": run_stream,
                CACHED: run_cached,
                "in-memory store (WindowBatches)": run_memory,
                "reference: per-sample memmap loop": run_reference}
    for fn in variants.values():  # warm page cache and imports
        fn(100)
    rates: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(rounds):
        names = list(variants) if r % 2 == 0 else list(variants)[::-1]
        for name in names:
            w0, c0 = time.perf_counter(), time.process_time()
            windows = variants[name](r)
            wall, c = time.perf_counter() - w0, time.process_time() - c0
            rates[name].append(windows / wall)
            cpu[name].append(windows / c)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"### Throughput: {n} records ({store.nbytes / 2**20:.0f} MiB int16 in memory; shards "
          f"{sum(f.stat().st_size for f in (path / 'shards').glob('*.parquet')) / 2**20:.0f} MiB zstd), "
          f"batch {BATCH} x 12 x {WINDOW}, {rounds} alternating rounds of one epoch, torch threads 1")
    print()
    print(table(["variant", "windows/s (median)", "windows/s (best)", "windows per CPU-s (median)"],
                [[k, f"{med[k]:,.0f}", f"{max(rates[k]):,.0f}", f"{statistics.median(cpu[k]):,.0f}"] for k in variants]))
    plain, mem, ref_name = "ours: streaming (StreamBatches, 1 worker)", "in-memory store (WindowBatches)", "reference: per-sample memmap loop"
    m, mc = med[mem], {k: statistics.median(v) for k, v in cpu.items()}
    for label, name in (("streaming, zstd shards", plain), ("streaming, decoded cache", CACHED)):
        s = med[name]
        print(f"- {label} = {s / m:.0%} of the in-memory store wall, {mc[name] / mc[mem]:.0%} per CPU-s "
              f"(target >= 50 %: {verdict(s >= 0.5 * m)}), {s / med[ref_name]:.1f}x the reference per-sample loop "
              f"(target >= 1.0x: {verdict(s >= med[ref_name])})")
    print()
    return med


def part_memory(small: Path, large: Path, workdir: Path) -> None:
    env = bench_env(OMP_NUM_THREADS="1")
    rows, peaks = [], {}
    for cache in ("", str(workdir / "cache")):
        for label, path in (("small", small), ("large", large)):
            wall, _, _, out = run_timed([PYTHON, "-c", STREAM_RSS, str(path)] + ([cache] if cache else []), env=env)
            peak = int(out.split()[-1]) / 1024
            peaks[label, cache] = peak
            what = "decoded cache" if cache else "zstd shards"
            rows.append([f"streaming one epoch, {what} ({path.name})", out.split()[-3], f"{peak:,.0f}", f"{wall:.1f}"])
    wall, _, _, out = run_timed([PYTHON, "-c", MEMORY_RSS, str(small)], env=env)
    rows.append([f"open_dataset, in memory ({small.name})", out.split()[-3], f"{int(out.split()[-1]) / 1024:,.0f}", f"{wall:.1f}"])
    # VmHWM, not ru_maxrss: Linux carries the parent's RSS at fork into a child's ru_maxrss across exec,
    # so a child of this (large) process would report at least the parent's size.
    print("### Peak RSS of a streaming process vs corpus size (fresh process each, VmHWM)")
    print()
    print(table(["process", "windows / records", "peak RSS MiB", "wall s"], rows))
    for cache in ("", str(workdir / "cache")):
        diff = peaks["large", cache] / peaks["small", cache] - 1
        print(f"- large vs small, {'decoded cache' if cache else 'zstd shards'}: {diff:+.1%} "
              f"(target < 15 %: {verdict(abs(diff) < 0.15)})")
    print()


def tiled(src: Path, times: int, workdir: Path) -> Path:
    """A corpus `times` as large made of hard links to `src`'s shards (as tests/data/test_stream.replicate)."""
    dest = workdir / f"{src.name}-x{times}"
    if (dest / "manifest.json").is_file():
        return dest
    manifest = json.loads((src / "manifest.json").read_text())
    (dest / "shards").mkdir(parents=True, exist_ok=True)
    shards = []
    for k in range(times):
        for i, entry in enumerate(manifest["shards"]):
            name = f"shards/shard-{k:03d}-{i:05d}.parquet"
            if not (dest / name).exists():
                os.link(src / entry["file"], dest / name)
            shards.append({**entry, "file": name})
    manifest["shards"], manifest["n_records"] = shards, manifest["n_records"] * times
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=20000)
    parser.add_argument("--large", type=int, default=200000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--part", choices=("speed", "memory", "all"), default="all")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ecg-stream-bench"))
    parser.add_argument("--synth-large", action="store_true", help="synthesise the large corpus, not tile the small one")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    header("bench_stream: streaming shards vs in-memory store vs reference loop")
    small = dataset_path(args.small, args.workdir)
    with LoadSampler() as load:
        if args.part in ("speed", "all"):
            part_speed(small, args.workdir, args.rounds)
        if args.part in ("memory", "all"):
            tile = not args.synth_large and args.large % args.small == 0
            large = tiled(small, args.large // args.small, args.workdir) if tile else dataset_path(args.large, args.workdir)
            part_memory(small, large, args.workdir)
    print(load.summary())


if __name__ == "__main__":
    main()
