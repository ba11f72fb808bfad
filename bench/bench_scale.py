"""How ingest, dataset loading and a small sweep grow with the corpus: 1k, 5k, 20k records.

For each size N (one run each, in this order, every step a fresh subprocess):
- prepare: `ecg-tune prepare ptbxl` on the PTB-XL sample replicated to N records (as in
  bench_ingest.py): wall, CPU, and peak memory of the whole process tree (parent + worker pool);
- synth: `ecg-tune synth --records N` (the synthetic generator + `write_dataset`), same measures;
- open: `open_dataset` of the synthetic shards (what every sweep driver does once);
- sweep: a fixed tiny sweep on the synthetic shards through `run_sweep` (2 trials x 1 epoch, FIFO,
  2 concurrent, xresnet1d50 width 8, a window per record per epoch, probe on at most 1000 records):
  wall and peak memory of the driver's tree (driver, GCS, raylet, workers).

Peak memory is the maximum over time of the summed PSS of the process tree, sampled every 0.25 s
with psutil (PSS counts shared pages once across the tree, unlike summed RSS). Writes a table and a
small plot (docs/bench_scale.png).

    .venv/bin/python bench/bench_scale.py [--sizes 1000,5000,20000] [--plot docs/bench_scale.png]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml
from _common import PYTHON, REPO, LoadSampler, bench_env, header, table
from bench_ingest import DEFAULT_SAMPLE, build_corpus
from bench_sweep import spec_doc

HERE = Path(__file__).resolve().parent


def tree_pss(root: psutil.Process) -> float:
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss
        except psutil.Error:
            pass
    return total


def run_sampled(cmd: list[str], env: dict[str, str], interval: float = 0.25, timeout: float = 3600) -> dict[str, float]:
    """Run cmd; wall s, CPU s of the tree (its reaped children included), peak tree PSS (MiB)."""
    out = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    root = psutil.Process(proc.pid)
    peak = [0.0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], tree_pss(root))
            except psutil.Error:
                pass
            stop.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        stop.set()
        sampler.join()
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        out.seek(0)
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.read().decode(errors='replace')[-4000:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "peak_mib": peak[0] / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,5000,20000")
    parser.add_argument("--sample", default=DEFAULT_SAMPLE)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--plot", default=str(REPO / "docs" / "bench_scale.png"))
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(args.workdir or tempfile.gettempdir()) / "ecg-tune-bench-scale"
    work.mkdir(parents=True, exist_ok=True)
    env = bench_env(RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1")
    header(f"Scaling with the corpus: {', '.join(map(str, sizes))} records")
    results: dict[int, dict[str, dict[str, float]]] = {}
    with LoadSampler(interval=5.0) as load:
        for n in sizes:
            r: dict[str, dict[str, float]] = {}
            corpus = build_corpus(Path(args.sample), Path(tempfile.gettempdir()) / "ecg-tune-bench-ingest" / f"ptbxl-{n}", n)
            prepared = work / f"prepared-{n}"
            shutil.rmtree(prepared, ignore_errors=True)
            r["prepare"] = run_sampled([PYTHON, "-m", "ecg_tune.cli", "prepare", "ptbxl", str(corpus), str(prepared)], env)
            synth = work / f"synth-{n}"
            shutil.rmtree(synth, ignore_errors=True)
            r["synth"] = run_sampled([PYTHON, "-m", "ecg_tune.cli", "synth", str(synth), "--records", str(n)], env)
            r["open"] = run_sampled([PYTHON, "-c", f"from ecg_tune.data import open_dataset; open_dataset({str(synth)!r})"], env)
            doc = spec_doc(f"scale-{n}", synth, scheduler="fifo", trials=2, epochs=1, concurrent=2, space=False)
            doc["fixed"]["optim.lr"] = 1e-3
            doc["fixed"]["evaluation.probe_max_records"] = 1000
            spec_path = work / f"scale-{n}.yaml"
            spec_path.write_text(yaml.safe_dump(doc))
            storage = work / "sweeps"
            shutil.rmtree(storage / f"scale-{n}", ignore_errors=True)
            r["sweep"] = run_sampled([PYTHON, str(HERE / "bench_sweep.py"), "child", "--spec", str(spec_path),
                                      "--storage", str(storage), "--json", str(work / f"scale-{n}.json")], env)
            results[n] = r
            print(f"  {n}: " + ", ".join(f"{k} {v['wall']:.1f} s / {v['peak_mib']:.0f} MiB" for k, v in r.items()), flush=True)
    print()
    rows = []
    for n, r in results.items():
        rows.append([
            f"{n:,}",
            f"{r['prepare']['wall']:.1f}", f"{r['prepare']['cpu']:.1f}", f"{r['prepare']['peak_mib']:.0f}",
            f"{r['synth']['wall']:.1f}", f"{r['synth']['peak_mib']:.0f}",
            f"{r['open']['wall']:.2f}", f"{r['open']['peak_mib']:.0f}",
            f"{r['sweep']['wall']:.0f}", f"{r['sweep']['peak_mib']:.0f}",
        ])
    print(table(["records", "prepare wall s", "prepare CPU s", "prepare peak MiB", "synth wall s", "synth peak MiB",
                 "open_dataset wall s", "open peak MiB", "sweep wall s (2 trials x 1 epoch)", "sweep peak MiB"], rows))
    first, last = sizes[0], sizes[-1]
    print()
    for key in ("prepare", "synth", "open", "sweep"):
        g_t = results[last][key]["wall"] / results[first][key]["wall"]
        g_m = results[last][key]["peak_mib"] / results[first][key]["peak_mib"]
        print(f"- {key}: {last // first}x the records → {g_t:.1f}x the wall time, {g_m:.1f}x the peak memory")
    print(load.summary())
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    plot(results, Path(args.plot))
    print(f"plot: {args.plot}")


def plot(results: dict[int, dict[str, dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(results)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3), dpi=90)
    labels = {"prepare": "prepare (WFDB → shards)", "synth": "synth (generate + write)", "open": "open_dataset",
              "sweep": "sweep (2 trials × 1 epoch)"}
    for key in ("prepare", "synth", "open"):
        axes[0].plot(sizes, [results[n][key]["wall"] for n in sizes], marker="o", label=labels[key])
        axes[1].plot(sizes, [results[n][key]["peak_mib"] for n in sizes], marker="o", label=labels[key])
    axes[1].plot(sizes, [results[n]["sweep"]["peak_mib"] for n in sizes], marker="o", label=labels["sweep"])
    axes[2].plot(sizes, [results[n]["sweep"]["wall"] for n in sizes], marker="o", color="C3", label=labels["sweep"])
    for ax, title in zip(axes, ("wall time (s)", "peak memory, tree PSS (MiB)", "sweep wall time (s)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("records")
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


if __name__ == "__main__":
    main()
