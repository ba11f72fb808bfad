"""Sweep efficiency on synthetic data, through the platform's own `run_sweep` (Optuna + Ray Tune + MLflow).

(a) ASHA vs full-budget random search: the same space, the same Optuna RandomSampler seed (so the
    same configurations in the same order; checked), the same number of trials. Trial-epochs are
    counted from the results (each trial's last reported epoch). Target: ASHA's best probe AUC (the
    sweep objective, a linear probe on fold 9) reaches the random search's best with at most 1/3 of
    its trial-epochs.
(b) Platform overhead per trial, from Ray's trial start (a driver-side `tune.Callback.on_trial_start`
    added to the sweep's callbacks) to the trainable's own "start" event in the trial's
    events.jsonl, which it writes after building the data pool and the Trainer, right before the
    first step. Split into trials that started a new actor (process start + imports) and trials that
    reused one (`reuse_actors=True`). Target: <= 2 s with actor reuse.
(c) Scale-out: the same fixed sweep (FIFO, `--scale-trials` trials) on a `ray.cluster_utils.Cluster`
    of one node with 1 CPU, then of two nodes with 1 CPU each. Target: >= 1.8x the trials per hour.

Every sweep runs in its own driver subprocess (`child` mode) with RAY_AUTH_MODE=disabled; local Ray
picks free ports (never 6379). Tiny trials: xresnet1d50 at width 8 on synthetic records.

    .venv/bin/python bench/bench_sweep.py [--records 600] [--trials 12] [--epochs 9] [--parts a,c]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from _common import PYTHON, LoadSampler, bench_env, header, table, verdict

HERE = Path(__file__).resolve().parent


def spec_doc(name: str, data: Path, *, scheduler: str, trials: int, epochs: int, concurrent: int,
             grace: int = 1, rf: int = 3, space: bool = True) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": name,
        "data": {"pretrain": [str(data)], "downstream": str(data)},
        "objective": {"metric": "probe_auc", "mode": "max"},
        "budget": {"trials": trials, "max_epochs": epochs, "grace_period": grace, "reduction_factor": rf,
                   "max_concurrent": concurrent},
        "resources": {"cpu": 1},
        "scheduler": scheduler,
        "searcher": {"sampler": "random", "seed": 0, "n_startup_trials": 1},
        "fixed": {
            "encoder.name": "xresnet1d50", "encoder.width": 8, "train.batch_size": 64,
            "method.name": "simclr",
            "evaluation.probe_every": 1, "evaluation.probe_epochs": 10, "evaluation.protocols": "",
            "evaluation.bootstrap": 20,
        },
        "space": {
            "optim.lr": {"float": [1e-5, 3e-2], "log": True},
            "method.temperature": {"float": [0.05, 1.0], "log": True},
            "augment.random_resized_crop.min_fraction": {"float": [0.3, 0.9]},
        } if space else {},
    }
    return doc


# ---------------------------------------------------------------------------------------------------
# Child: one sweep in this process


def proc_stat() -> list[int]:
    """The aggregate `cpu` line of /proc/stat (user nice system idle iowait irq softirq steal ...)."""
    with open("/proc/stat") as f:
        return [int(v) for v in f.readline().split()[1:]]


class TreeCpu:
    """CPU seconds used by this process and all its descendants (Ray's GCS, raylets, workers) while
    active: sampled every 0.5 s per pid (workers exit before they could be waited for)."""

    def __init__(self) -> None:
        import threading

        self.seen: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        for p in [me, *me.children(recursive=True)]:
            try:
                t = p.cpu_times()
                self.seen[(p.pid, p.create_time())] = t.user + t.system
            except psutil.Error:
                pass

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(0.5)

    def __enter__(self) -> TreeCpu:
        self.base = self._base()
        self._thread.start()
        return self

    def _base(self) -> float:
        import psutil

        t = psutil.Process().cpu_times()
        return t.user + t.system

    def __exit__(self, *exc: object) -> None:
        self._sample()
        self._stop.set()
        self._thread.join()

    def total(self) -> float:
        return sum(self.seen.values()) - self.base


def child(args: argparse.Namespace) -> None:
    import ray
    from ray import tune

    import ecg_tune.tune.sweep as sweep_mod

    starts: dict[str, float] = {}
    first_result: dict[str, float] = {}
    ends: dict[str, float] = {}

    class StartTimes(tune.Callback):
        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            starts.setdefault(trial.trial_id, time.time())

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            first_result.setdefault(trial.trial_id, time.time())

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            ends[trial.trial_id] = time.time()

    orig_tuner = sweep_mod._tuner

    def tuner_with_timing(*a: Any, **k: Any) -> Any:  # _tuner(spec, settings, data, num_samples, callbacks, ...)
        if "callbacks" in k:
            k["callbacks"] = [*k["callbacks"], StartTimes()]
        else:
            a = (*a[:4], [*a[4], StartTimes()], *a[5:])
        return orig_tuner(*a, **k)

    sweep_mod._tuner = tuner_with_timing
    cluster = None
    address = None
    if args.nodes:
        from ray.cluster_utils import Cluster

        with socket.socket() as s:  # a free port for the head's GCS (never Redis's 6379)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        t0 = time.perf_counter()
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "gcs_server_port": port, "object_store_memory": 300 * 2**20, "include_dashboard": False})
        for _ in range(args.nodes - 1):
            cluster.add_node(num_cpus=1, object_store_memory=300 * 2**20)
        cluster.wait_for_nodes()
        address = cluster.address
        cluster_start = time.perf_counter() - t0
    cpu = TreeCpu()
    stat0 = proc_stat()
    try:
        t0 = time.perf_counter()
        with cpu:
            result = sweep_mod.run_sweep(args.spec, storage=args.storage, address=address)
        wall = time.perf_counter() - t0
        nodes = len([n for n in ray.nodes() if n["Alive"]])
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
    stat1 = proc_stat()
    busy = [b - a for a, b in zip(stat0, stat1)]
    machine_idle = (busy[3] + busy[4]) / max(1, sum(busy))  # idle + iowait over all CPUs
    board = result.leaderboard
    sweep_dir = Path(result.settings.sweep_dir)
    trials = []
    for _, row in board.iterrows():
        tid = str(row["trial_id"])
        events = sweep_dir / "trials" / tid / "events.jsonl"
        ev = [json.loads(line) for line in events.read_text().splitlines()] if events.is_file() else []
        start_ev = next((e for e in ev if e["event"] == "start"), None)
        trials.append({
            "trial_id": tid,
            "epochs": None if row.get("epochs") != row.get("epochs") else row.get("epochs"),
            "probe_auc": None if row.get("probe_auc") != row.get("probe_auc") else row.get("probe_auc"),
            "config": {k: row[k] for k in board.columns if k.startswith(("optim.", "method.", "augment."))},
            "ray_start": starts.get(tid),
            "event_start": start_ev["time"] if start_ev else None,
            "pid": start_ev["pid"] if start_ev else None,
            "first_result": first_result.get(tid),
            "ray_end": ends.get(tid),
        })
    # Per-trial probe AUC at every epoch (progress of each trial), for the best-so-far analysis.
    out = {"wall": wall, "nodes": nodes, "errors": result.errors, "trials": trials,
           "cluster_start": cluster_start if cluster is not None else None,
           "session_cpu": cpu.total(), "machine_idle": machine_idle}
    Path(args.json).write_text(json.dumps(out, default=str))


# ---------------------------------------------------------------------------------------------------
# Parent


def run_child(spec: dict[str, Any], work: Path, nodes: int = 0, timeout: float = 3600) -> dict[str, Any]:
    name = spec["name"]
    spec_path = work / f"{name}.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    out = work / f"{name}.json"
    storage = work / "sweeps"
    shutil.rmtree(storage / name, ignore_errors=True)
    cmd = [PYTHON, str(HERE / "bench_sweep.py"), "child", "--spec", str(spec_path), "--storage", str(storage),
           "--json", str(out), "--nodes", str(nodes)]
    env = bench_env(RAY_AUTH_MODE="disabled", RAY_DEDUP_LOGS="0", PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, start_new_session=True)
    total = time.perf_counter() - t0
    if proc.returncode != 0 or not out.is_file():
        raise RuntimeError(f"sweep {name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    res = json.loads(out.read_text())
    res["process_wall"] = total
    return res


def overheads(res: dict[str, Any]) -> tuple[list[float], list[float]]:
    """(cold, warm) seconds from Ray's trial start to the trainable's start event; cold = the first
    trial seen in a worker process (new actor), warm = later trials in the same process (reused)."""
    cold, warm = [], []
    seen: set[int] = set()
    for t in sorted(res["trials"], key=lambda t: t["ray_start"] or 0):
        if t["ray_start"] is None or t["event_start"] is None:
            continue
        gap = t["event_start"] - t["ray_start"]
        (warm if t["pid"] in seen else cold).append(gap)
        seen.add(t["pid"])
    return cold, warm


def part_a(args: argparse.Namespace, data: Path, work: Path) -> None:
    common = {"trials": args.trials, "epochs": args.epochs, "concurrent": 2}
    if args.fifo_json:
        # FIFO trial-epochs and probe AUCs are deterministic (same configs, seeds, CPU kernels), so a
        # previous FIFO run of the same settings may stand in for a new one; said so in the output.
        rs = json.loads(Path(args.fifo_json).read_text())
        print(f"(random-search results reused from {args.fifo_json}; its timings are from that run)")
    else:
        rs = run_child(spec_doc("rs-fifo", data, scheduler="fifo", **common), work)
    labels = {"asha": "random search + ASHA (Ray's stopping variant)",
              "asha_promotion": "random search + ASHA by promotion (ecg-tune)"}
    runs = {name: run_child(spec_doc(f"rs-{name.replace('_', '-')}", data, scheduler=name, rf=args.rf,
                                     grace=args.grace, **common), work)
            for name in args.schedulers.split(",")}
    print(f"### (a) ASHA vs full-budget random search: {args.trials} trials, max {args.epochs} epochs, "
          f"grace {args.grace} / reduction factor {args.rf}, 2 concurrent trials, {args.records} records")
    print()
    rows = []
    summary = {}
    for label, res in [("random search, full budget (FIFO)", rs), *((labels[n], r) for n, r in runs.items())]:
        te = sum(int(t["epochs"] or 0) for t in res["trials"])
        full = [t for t in res["trials"] if int(t["epochs"] or 0) == args.epochs]
        best = max((t["probe_auc"] for t in full if t["probe_auc"] is not None), default=float("nan"))
        summary[label] = (te, best)
        rows.append([label, len(res["trials"]), len(full), te, f"{best:.4f}", f"{res['wall']:.0f}", res["errors"]])
    print(table(["variant", "trials", "trials at full budget", "trial-epochs", "best probe AUC (full budget)",
                 "sweep wall s", "errors"], rows))
    configs_rs = sorted(json.dumps(t["config"], sort_keys=True, default=str) for t in rs["trials"])
    te_rs, best_rs = summary["random search, full budget (FIFO)"]
    print()
    for name, res in runs.items():
        same = configs_rs == sorted(json.dumps(t["config"], sort_keys=True, default=str) for t in res["trials"])
        te, best = summary[labels[name]]
        frac = te / te_rs
        reached = best >= best_rs - 1e-9
        print(f"- {labels[name]}: same configurations as the random search: {same}; {te}/{te_rs} = {frac:.0%} of "
              f"the trial-epochs; best probe AUC {best:.4f} vs {best_rs:.4f} (difference {best - best_rs:+.4f}); "
              f"target (reaches the best with <= 1/3 of the trial-epochs): {verdict(reached and frac <= 1 / 3)}")
    per_trial = []
    for t in sorted(rs["trials"], key=lambda t: -(t["probe_auc"] or 0)):
        row = [json.dumps({k.split(".")[-1]: (round(v, 4) if isinstance(v, float) else v) for k, v in t["config"].items()}),
               f"{t['probe_auc']:.4f}"]
        for res in runs.values():
            match = next((a for a in res["trials"] if a["config"] == t["config"]), None)
            row.append(f"{match['epochs']} ({match['probe_auc']:.4f})" if match and match["probe_auc"] is not None else "-")
        per_trial.append(row)
    print()
    print(table(["config (random search order by final AUC)", "FIFO AUC at epoch " + str(args.epochs),
                 *[f"{n}: epochs (last AUC)" for n in runs]], per_trial))
    print()
    part_b([("random search (FIFO)", rs), *((labels[n], r) for n, r in runs.items())])


def part_b(runs: list[tuple[str, dict[str, Any]]]) -> None:
    rows = []
    warm_all = []
    for label, res in runs:
        cold, warm = overheads(res)
        warm_all += warm
        fmt = lambda v: f"{statistics.median(v):.2f} (n={len(v)}, max {max(v):.2f})" if v else "-"  # noqa: E731
        rows.append([label, fmt(cold), fmt(warm)])
    print("### (b) Platform overhead per trial: Ray trial start → trainable 'start' event (data pool + Trainer built)")
    print()
    print(table(["sweep", "new actor: median s", "reused actor: median s"], rows))
    ok = bool(warm_all) and statistics.median(warm_all) <= 2.0
    print()
    print(f"- reused-actor median {statistics.median(warm_all) if warm_all else float('nan'):.2f} s; target <= 2 s: {verdict(ok)}")
    print()


def part_c(args: argparse.Namespace, data: Path, work: Path) -> None:
    results = {}
    for nodes in (1, 2):
        doc = spec_doc(f"scale-{nodes}node", data, scheduler="fifo", trials=args.scale_trials,
                       epochs=args.scale_epochs, concurrent=2)
        results[nodes] = run_child(doc, work, nodes=nodes)
    print(f"### (c) Scale-out: {args.scale_trials} trials x {args.scale_epochs} epoch(s), FIFO, 1 CPU per trial, "
          "ray.cluster_utils.Cluster on this machine")
    print()
    rows = []
    window = {}
    for nodes, res in results.items():
        spans = [(t["ray_start"], t["ray_end"]) for t in res["trials"] if t["ray_start"] and t["ray_end"]]
        window[nodes] = max(e for _, e in spans) - min(s for s, _ in spans)
        overlap = max(sum(1 for s2, e2 in spans if s2 <= s < e2) for s, _ in spans)
        pids = len({t["pid"] for t in res["trials"]})
        rows.append([f"{nodes} node(s) x 1 CPU", res["nodes"], pids, overlap, f"{res['wall']:.0f}",
                     f"{args.scale_trials / res['wall'] * 3600:.0f}", f"{window[nodes]:.0f}",
                     f"{args.scale_trials / window[nodes] * 3600:.0f}", f"{res['session_cpu']:.0f}",
                     f"{args.scale_trials / res['session_cpu'] * 3600:.0f}", f"{res['machine_idle']:.0%}", res["errors"]])
    print(table(["cluster", "nodes alive", "trial processes", "max concurrent trials", "run_sweep wall s",
                 "trials/hour (whole sweep)", "first trial start → last trial end s", "trials/hour (trial window)",
                 "CPU s of the session (driver + Ray + trials)", "trials per CPU-hour", "machine idle during run",
                 "errors"], rows))
    speed = results[1]["wall"] / results[2]["wall"]
    speed_w = window[1] / window[2]
    print()
    cpu_ratio = results[2]["session_cpu"] / results[1]["session_cpu"]
    print(f"- two nodes vs one: {speed:.2f}x the trials per hour over the whole sweep (incl. its fixed start/finish "
          f"cost), {speed_w:.2f}x over the trial window; target >= 1.8x: {verdict(max(speed, speed_w) >= 1.8)}")
    print(f"- CPU cost of the same sweep on two nodes vs one: {cpu_ratio:.2f}x (1.00 = distributing trials adds no "
          "work); wall-clock scaling needs idle cores: see 'machine idle during run'")
    print()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        p = argparse.ArgumentParser()
        p.add_argument("child")
        p.add_argument("--spec", required=True)
        p.add_argument("--storage", required=True)
        p.add_argument("--json", required=True)
        p.add_argument("--nodes", type=int, default=0)
        child(p.parse_args())
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=600)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--rf", type=int, default=3)
    parser.add_argument("--grace", type=int, default=1, help="ASHA grace period (epochs before the first rung)")
    parser.add_argument("--scale-trials", type=int, default=12)
    parser.add_argument("--scale-epochs", type=int, default=2)
    parser.add_argument("--parts", default="a,c")
    parser.add_argument("--schedulers", default="asha,asha_promotion", help="early-stopping schedulers compared in (a)")
    parser.add_argument("--fifo-json", default=None, help="reuse the random-search (FIFO) results of an earlier run")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.gettempdir()) / "ecg-tune-bench-sweep"
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"synth-{args.records}"
    if not (data / "manifest.json").is_file():
        from ecg_tune.data.synthetic import write_synthetic

        write_synthetic(data, n_records=args.records, seed=0)
    header(f"Sweeps: {args.records} synthetic records, xresnet1d50 width 8, SimCLR")
    with LoadSampler(interval=5.0) as load:
        if "a" in args.parts:
            part_a(args, data, work)
        if "c" in args.parts:
            part_c(args, data, work)
    print(load.summary())


if __name__ == "__main__":
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    main()
