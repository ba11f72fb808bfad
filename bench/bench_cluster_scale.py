"""Scale by simulation: many short fractional-GPU trials on a local multi-node Ray cluster.

A `ray.cluster_utils.Cluster` of N nodes on this machine, each declaring GPUs it does not have
(Ray schedules by declared resources; nothing here touches CUDA), runs Ray Tune sweeps of a trivial
function trainable that sleeps a little and reports where it ran: node id, `ray.get_gpu_ids()`,
CUDA_VISIBLE_DEVICES, pid, and its start/end times. Each sweep runs in a fresh driver process (so
its memory is its own) connected to the same cluster, with the platform's Tune settings.

Checks, per sweep:
- placement: every trial got exactly one GPU id of its node, matching CUDA_VISIBLE_DEVICES; at no
  moment did a GPU hold more than 1/gpu_per_trial trials or a node more than its GPU capacity;
- utilisation while trials were waiting (from the first to the last trial start): mean occupancy
  of the declared GPU slots, share of that time at full capacity, and the least busy GPU;
- the driver: CPU seconds per trial (getrusage), peak RSS (sampled), wall time, trials/s, and the
  median gap between one trial's end and the next trial's start on the same actor.

    python bench/bench_cluster_scale.py                  # 2 nodes x 4 GPUs, 100/300/1000 trials
    python bench/bench_cluster_scale.py --nodes 3 --trials 100,300 --optuna 300 --json out.json
    python bench/bench_cluster_scale.py --trials "" --optuna 0 --long 0 --fresh-actors 0 --saturate 25
    python bench/bench_cluster_scale.py --snapshot-s 60 ...   # TUNE_GLOBAL_CHECKPOINT_S of the drivers

On a 2-core machine every "node" shares the same two cores: actor start-up and the driver compete
for them, so throughput and occupancy say more about the machine than about Ray; the placement
checks and the driver's CPU time per trial do not depend on that.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

SLOT_EPS = 1e-6


# --------------------------------------------------------------------------------------------------
# Child: one sweep in a fresh driver process


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _trial(config: dict[str, Any]) -> None:
    import ray
    from ray import tune

    start = time.time()
    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    time.sleep(config["sleep"])
    tune.report({
        "score": config["x"],
        "node": ray.get_runtime_context().get_node_id(),
        "gpu_ids": ",".join(gpu_ids),
        "cvd": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        "worker_pid": os.getpid(),
        "t_start": start,
        "t_end": time.time(),
    })


def run_variant(v: dict[str, Any], address: str) -> dict[str, Any]:
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "1")
    # ecg_tune.tune.sweep uses 2 s up to 100 trials, then trials/50 s (tune/ray_start.py snapshot_period)
    # ecg-tune's rule (tune/ray_start.py snapshot_period) unless --snapshot-s is given
    os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = str(v.get("snapshot_s") or max(2, round(v["trials"] / 50)))
    import ray
    from ray import tune

    rss_before = _rss_mb()
    ray.init(address=address, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    peak = [_rss_mb()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.25):
            peak[0] = max(peak[0], _rss_mb())

    threading.Thread(target=sample, daemon=True).start()
    def cpu_s() -> float:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime + ru.ru_stime

    class Progress(tune.Callback):
        """Driver CPU time as trials complete: shows whether the per-trial cost grows within a sweep."""

        def __init__(self) -> None:
            self.points: list[tuple[int, float, float]] = []

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.points.append((len(self.points) + 1, cpu_s(), time.time()))

    progress = Progress()
    space = {"x": tune.uniform(0.0, 1.0), "sleep": tune.uniform(v["sleep_min"], v["sleep_max"])}
    search_alg = None
    if v["searcher"] == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(metric="score", mode="max", seed=0)
    trainable = tune.with_resources(_trial, {"cpu": v["cpu_per_trial"], "gpu": v["gpu_per_trial"]})
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as storage:
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(num_samples=v["trials"], search_alg=search_alg, reuse_actors=v["reuse_actors"],
                                        max_concurrent_trials=v.get("max_concurrent") or None,
                                        trial_dirname_creator=lambda t: f"trial_{t.trial_id}"),
            run_config=tune.RunConfig(name="bench", storage_path=storage, verbose=1, callbacks=[progress],
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                                      failure_config=tune.FailureConfig(max_failures=3)),
        )
        load0 = os.getloadavg()[0]
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.time()
        if v.get("profile"):
            import cProfile
            import io
            import pstats

            profiler = cProfile.Profile()
            grid = profiler.runcall(tuner.fit)
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(45)
            Path(v["profile"]).write_text(text.getvalue())
        else:
            grid = tuner.fit()
        wall = time.time() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        stop.set()
        rows = [{k: r.metrics.get(k) for k in ("node", "gpu_ids", "cvd", "worker_pid", "t_start", "t_end")}
                for r in grid if r.metrics and "t_start" in r.metrics]
        errors = grid.num_errors
    return {
        "wall_s": wall,
        "fit_started": t0,
        "load_avg": (load0 + os.getloadavg()[0]) / 2,
        "driver_cpu_s": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
        "rss_before_init_mb": rss_before,
        "rss_peak_mb": peak[0],
        "rss_end_mb": _rss_mb(),
        "errors": errors,
        "rows": rows,
        "progress": progress.points,
    }


# --------------------------------------------------------------------------------------------------
# Analysis


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    cur = best = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


def busy_time(intervals: list[tuple[float, float]], lo: float, hi: float, weight: float = 1.0) -> tuple[float, float]:
    """(slot-seconds of `intervals` inside [lo, hi], seconds inside [lo, hi] covered by at least one)."""
    weighted = sum(max(0.0, min(e, hi) - max(s, lo)) for s, e in intervals) * weight
    covered, end = 0.0, lo
    for s, e in sorted(intervals):
        s, e = max(s, lo, end), min(e, hi)
        if e > s:
            covered += e - s
            end = e
    return weighted, covered


def analyse(out: dict[str, Any], v: dict[str, Any], nodes: int, gpus_per_node: int) -> dict[str, Any]:
    rows = out["rows"]
    per_gpu_cap = round(1 / v["gpu_per_trial"])
    node_cap = gpus_per_node * per_gpu_cap
    capacity = nodes * node_cap
    problems = []
    by_node: dict[str, list] = defaultdict(list)
    by_gpu: dict[tuple[str, str], list] = defaultdict(list)
    for r in rows:
        ids = [g for g in (r["gpu_ids"] or "").split(",") if g]
        if len(ids) != 1 or int(ids[0]) not in range(gpus_per_node):
            problems.append(f"trial got GPU ids {ids!r}")
        if r["cvd"] != (ids[0] if ids else ""):
            problems.append(f"CUDA_VISIBLE_DEVICES {r['cvd']!r} != GPU ids {ids!r}")
        span = (r["t_start"], r["t_end"])
        by_node[r["node"]].append(span)
        if ids:
            by_gpu[(r["node"], ids[0])].append(span)
    max_node = max((max_overlap(s) for s in by_node.values()), default=0)
    max_gpu = max((max_overlap(s) for s in by_gpu.values()), default=0)
    if max_node > node_cap:
        problems.append(f"{max_node} concurrent trials on a node (capacity {node_cap})")
    if max_gpu > per_gpu_cap:
        problems.append(f"{max_gpu} concurrent trials on one GPU (capacity {per_gpu_cap})")
    starts = sorted(r["t_start"] for r in rows)
    lo, hi = (starts[0], starts[-1]) if starts else (0.0, 0.0)
    window = max(hi - lo, SLOT_EPS)
    spans = [(r["t_start"], r["t_end"]) for r in rows]
    slot_seconds, _ = busy_time(spans, lo, hi)
    occupancy = slot_seconds / (capacity * window)
    # time at full capacity: sweep the occupancy curve inside the window
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    cur, prev, full = 0, lo, 0.0
    for t, d in events:
        t_c = min(max(t, lo), hi)
        if cur >= capacity:
            full += t_c - prev
        prev = t_c
        cur += d
    # the same after the ramp: from the moment every slot was first busy until the last start
    # (isolates scheduling gaps from actor start-up)
    cur, full_at = 0, None
    for t, d in events:
        cur += d
        if cur >= capacity and full_at is None:
            full_at = t
    after_ramp = float("nan")
    if full_at is not None and hi > full_at:
        busy_after, _ = busy_time(spans, full_at, hi)
        after_ramp = busy_after / (capacity * (hi - full_at))
    gpu_busy = []
    for n in by_node:
        for g in range(gpus_per_node):
            _, covered = busy_time(by_gpu.get((n, str(g)), []), lo, hi)
            gpu_busy.append(covered / window)
    # gap between a trial's end and the next trial's start on the same actor process
    gaps = []
    by_pid: dict[int, list] = defaultdict(list)
    for r in rows:
        by_pid[r["worker_pid"]].append((r["t_start"], r["t_end"]))
    for spans_pid in by_pid.values():
        spans_pid.sort()
        gaps += [b[0] - a[1] for a, b in zip(spans_pid, spans_pid[1:])]
    gaps.sort()
    n = max(len(rows), 1)
    # driver CPU per completed trial in the first and the last fifth of the sweep
    pts = out.get("progress") or []
    fifth = max(1, len(pts) // 5)

    def cpu_rate(seg: list) -> float:
        return 1000 * (seg[-1][1] - seg[0][1]) / max(1, seg[-1][0] - seg[0][0]) if len(seg) > 1 else float("nan")
    return {
        "trials_done": len(rows),
        "errors": out["errors"],
        "wall_s": out["wall_s"],
        "trials_per_s": len(rows) / out["wall_s"],
        "driver_cpu_ms_per_trial": 1000 * out["driver_cpu_s"] / n,
        "wall_ms_per_trial": 1000 * out["wall_s"] / n,
        "rss_peak_mb": out["rss_peak_mb"],
        "rss_end_mb": out["rss_end_mb"],
        "actors": len(by_pid),
        "nodes_used": len(by_node),
        "ramp_s": (starts[0] - out["fit_started"]) if starts else float("nan"),
        "steady_trials_per_s": (len(starts) - 1) / window if len(starts) > 1 else float("nan"),
        "load_avg": out["load_avg"],
        "cpu_ms_first_fifth": cpu_rate(pts[:fifth + 1]),
        "cpu_ms_last_fifth": cpu_rate(pts[-fifth - 1:]),
        "median_gap_s": gaps[len(gaps) // 2] if gaps else float("nan"),
        "max_per_node": max_node,
        "max_per_gpu": max_gpu,
        "occupancy_waiting": occupancy,
        "full_capacity_share": full / window,
        "ramp_to_full_s": (full_at - lo) if full_at is not None else float("nan"),
        "occupancy_after_ramp": after_ramp,
        "min_gpu_busy_share": min(gpu_busy) if gpu_busy else 0.0,
        "problems": problems,
    }


# --------------------------------------------------------------------------------------------------
# Parent: the cluster and the table


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--gpus-per-node", type=int, default=4)
    p.add_argument("--cpus-per-node", type=int, default=32, help="declared CPUs (more than GPU slots: GPUs bind)")
    p.add_argument("--gpu-per-trial", type=float, default=0.25)
    p.add_argument("--trials", default="100,300,1000", help="sizes of the random-search sweeps")
    p.add_argument("--sleep", default="0.05,0.2", help="min,max seconds a trial sleeps")
    p.add_argument("--optuna", type=int, default=300,
                   help="trials of the OptunaSearch variants, without and with max_concurrent_trials (0: none)")
    p.add_argument("--long", type=int, default=300, help="trials of a variant with 1-2 s trials (0: none)")
    p.add_argument("--fresh-actors", type=int, default=100, help="trials of a reuse_actors=False variant (0: none)")
    p.add_argument("--saturate", type=float, default=0.0,
                   help="also run 2 trials per slot that sleep this many seconds (e.g. 25): fills every slot, "
                        "so the capacity bounds and idle GPUs are checked at full load (0: none)")
    p.add_argument("--snapshot-s", type=float, default=0.0,
                   help="TUNE_GLOBAL_CHECKPOINT_S of the drivers (0: ecg-tune's rule, 2 s up to 100 trials, then trials/50)")
    p.add_argument("--profile-dir", default=None, help="write a cProfile summary of each driver here")
    p.add_argument("--timeout", type=int, default=1500, help="seconds per sweep")
    p.add_argument("--json", default=None, help="write every measurement here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--address", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child:
        result = run_variant(json.loads(args.child), args.address)
        print("BENCH_RESULT " + json.dumps(result))
        return 0

    os.environ.setdefault("RAY_AUTH_MODE", "token")  # explicit, as for every Ray process (platform notes §3.7)
    if os.environ["RAY_AUTH_MODE"] == "token":
        os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    os.environ.pop("RAY_ADDRESS", None)
    import socket

    import ray
    from ray.cluster_utils import Cluster

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    lo_s, hi_s = (float(x) for x in args.sleep.split(","))
    base = {"cpu_per_trial": 1, "gpu_per_trial": args.gpu_per_trial, "sleep_min": lo_s, "sleep_max": hi_s,
            "reuse_actors": True, "searcher": "random", "snapshot_s": args.snapshot_s}
    variants = [{**base, "label": f"random, reuse, {n}", "trials": int(n)} for n in args.trials.split(",") if n]
    slots = int(args.nodes * args.gpus_per_node / args.gpu_per_trial)
    if args.optuna:
        # As ecg-tune runs it with budget.max_concurrent: 0 (no ConcurrencyLimiter), then with one.
        variants.append({**base, "label": f"optuna, reuse, {args.optuna}", "trials": args.optuna, "searcher": "optuna"})
        variants.append({**base, "label": f"optuna, reuse, {args.optuna}, max_concurrent {slots}", "trials": args.optuna,
                         "searcher": "optuna", "max_concurrent": slots})
    if args.long:
        variants.append({**base, "label": f"random, reuse, {args.long}, 1-2 s", "trials": args.long, "sleep_min": 1.0,
                         "sleep_max": 2.0})
    if args.saturate:
        n = 2 * int(args.nodes * args.gpus_per_node / args.gpu_per_trial)
        variants.append({**base, "label": f"random, reuse, {n}, {args.saturate:g} s (saturating)", "trials": n,
                         "sleep_min": args.saturate, "sleep_max": args.saturate * 1.2})
    if args.fresh_actors:
        variants.append({**base, "label": f"random, fresh actors, {args.fresh_actors}", "trials": args.fresh_actors,
                         "reuse_actors": False})

    node_args = {"num_cpus": args.cpus_per_node, "num_gpus": args.gpus_per_node, "object_store_memory": 256 * 2**20}
    t0 = time.time()
    # Cluster() records its address in /tmp/ray/ray_current_cluster, where `ray.init("auto")` of any
    # other Ray user on this machine would find it: put back what was there.
    current = Path("/tmp/ray/ray_current_cluster")
    previous = current.read_text() if current.is_file() else None
    cluster = Cluster(initialize_head=True, head_node_args={**node_args, "include_dashboard": False,
                                                            "dashboard_agent_listen_port": free_port()})
    if previous is not None:
        current.write_text(previous)
    for _ in range(args.nodes - 1):
        cluster.add_node(**node_args)
    cluster.wait_for_nodes()
    startup = time.time() - t0
    print(f"cluster: {args.nodes} nodes x {args.gpus_per_node} declared GPUs ({args.cpus_per_node} declared CPUs each), "
          f"{args.gpu_per_trial} GPU per trial -> {int(args.nodes * args.gpus_per_node / args.gpu_per_trial)} slots; "
          f"up in {startup:.1f} s; address {cluster.address}", flush=True)
    records = []
    if args.profile_dir:
        Path(args.profile_dir).mkdir(parents=True, exist_ok=True)
        for i, v in enumerate(variants):
            v["profile"] = str(Path(args.profile_dir) / f"{i:02d}-{v['searcher']}-{v['trials']}.txt")
    try:
        for v in variants:
            t = time.time()
            proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(v), "--address", cluster.address],
                                  capture_output=True, text=True, timeout=args.timeout, env=os.environ.copy())
            line = next((x for x in proc.stdout.splitlines() if x.startswith("BENCH_RESULT ")), None)
            if proc.returncode != 0 or line is None:
                print(f"{v['label']}: failed (rc {proc.returncode})\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}", flush=True)
                records.append({"variant": v, "failed": True})
                continue
            raw = json.loads(line.removeprefix("BENCH_RESULT "))
            stats = analyse(raw, v, args.nodes, args.gpus_per_node)
            records.append({"variant": v, "stats": stats, "child_wall_s": time.time() - t, "rows": raw["rows"]})
            print(f"{v['label']}: {stats['trials_done']} trials in {stats['wall_s']:.1f} s, "
                  f"driver {stats['driver_cpu_ms_per_trial']:.1f} ms CPU/trial, peak RSS {stats['rss_peak_mb']:.0f} MB, "
                  f"problems: {stats['problems'] or 'none'}", flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()

    print()
    header = ["variant", "trials", "errors", "wall s", "first start s", "trials/s (starts)", "driver CPU ms/trial", "… first/last fifth",
              "driver RSS peak MB", "actors", "nodes", "median gap s", "max/node", "max/GPU", "occupancy while waiting",
              "time at full capacity", "s to fill all slots", "occupancy after that", "least busy GPU", "placement", "load avg"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for rec in records:
        v = rec["variant"]
        if rec.get("failed"):
            print(f"| {v['label']} | failed |" + " |" * (len(header) - 2))
            continue
        s = rec["stats"]
        cells = [v["label"], s["trials_done"], s["errors"], f"{s['wall_s']:.1f}", f"{s['ramp_s']:.1f}",
                 f"{s['steady_trials_per_s']:.1f}", f"{s['driver_cpu_ms_per_trial']:.1f}",
                 f"{s['cpu_ms_first_fifth']:.0f} / {s['cpu_ms_last_fifth']:.0f}", f"{s['rss_peak_mb']:.0f}",
                 s["actors"], s["nodes_used"], f"{s['median_gap_s']:.2f}", s["max_per_node"], s["max_per_gpu"],
                 f"{100 * s['occupancy_waiting']:.0f}%", f"{100 * s['full_capacity_share']:.0f}%",
                 "never" if s["ramp_to_full_s"] != s["ramp_to_full_s"] else f"{s['ramp_to_full_s']:.0f}",
                 "-" if s["occupancy_after_ramp"] != s["occupancy_after_ramp"] else f"{100 * s['occupancy_after_ramp']:.1f}%",
                 f"{100 * s['min_gpu_busy_share']:.0f}%", "ok" if not s["problems"] else "; ".join(s["problems"][:3]),
                 f"{s['load_avg']:.1f}"]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"nodes": args.nodes, "gpus_per_node": args.gpus_per_node,
                                               "cpus_per_node": args.cpus_per_node, "startup_s": startup,
                                               "records": records}, indent=2))
    return 1 if any(r.get("failed") or r["stats"]["problems"] for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
