"""Chaos: faults cost time, never results.

A 12-trial ablation sweep (3 cells x 4 seeds: SimCLR at two learning rates and BYOL; FIFO, two trials at
a time, 3 epochs each, tiny xresnet1d50 on synthetic shards, CPU) runs once undisturbed and once while a
seeded schedule, spread over the whole sweep, SIGKILLs trial workers (the Ray worker process running
train_trial, found through the pid in trials/<id>/events.jsonl) and the driver (its whole process
group, while trials train or just after a trial's final evaluation, followed each time by
`ecg-tune resume`). Afterwards every trial must be finished, exactly once in MLflow and in the
leaderboard, with the same final probe_auc, linear.test_auc and loss as its undisturbed twin (matched by
ablation cell and seed).
"""

from __future__ import annotations

import csv
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.tune.conftest import (
    events,
    finish,
    kill_group,
    run_cli,
    start,
    tiny_doc,
    trial_runs,
    write_yaml,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

SEED = 7
# worker: SIGKILL the Ray worker of a trial in training; driver: SIGKILL the driver's process group while
# trials train; final: the same, just after a trial ran its final evaluation (when its last report may
# not be in Ray's experiment snapshot yet). Action i waits until i/len of the trials finished, so the
# faults are spread over the whole sweep however fast the machine is.
SCHEDULE = ["worker", "driver", "worker", "final", "worker", "worker", "driver", "worker", "final", "worker"]
METRICS = ("probe_auc", "linear.test_auc", "loss")
TOLERANCE = 1e-6


def chaos_doc(shards_path: Path, name: str) -> dict[str, Any]:
    return tiny_doc(
        shards_path, name=name, space={}, budget={"trials": 12, "max_epochs": 3, "max_concurrent": 2},
        ablation={"baseline": {"method.name": "simclr", "optim.lr": 1.0e-3},
                  "factors": {"optim.lr": [3.0e-3], "method.name": ["byol"]}, "seeds": [0, 1, 2, 3]},
    )


def results_by_config(sweep_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(cell, seed) -> final metrics and status of its MLflow run; fails on a trial with two runs."""
    _, trials, _ = trial_runs(sweep_dir)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for run in trials:
        key = (run.data.tags["ecg_tune.cell"], run.data.params["seed"])
        assert key not in out, f"two MLflow runs for {key}"
        out[key] = {"status": run.info.status, "trial_id": run.data.tags["ecg_tune.trial_id"],
                    **{m: run.data.metrics.get(m) for m in METRICS}}
    return out


def leaderboard_by_trial(sweep_dir: Path) -> dict[str, dict[str, str]]:
    with open(sweep_dir / "leaderboard.csv") as f:
        return {row["trial_id"]: row for row in csv.DictReader(f)}


def is_ray_worker(pid: int) -> bool:
    try:
        return b"ray::" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def finished_trials(sweep_dir: Path) -> set[str]:
    return {p.parent.parent.name for p in (sweep_dir / "trials").glob("*/artifacts/linear.json")}


def training_trials(sweep_dir: Path) -> dict[str, int]:
    """Trials whose latest start is in a live Ray worker and that have not finished: trial id -> pid."""
    out = {}
    done = finished_trials(sweep_dir)
    for trial_id, evs in events(sweep_dir).items():
        started = [e for e in evs if e["event"] == "start"]
        if started and trial_id not in done:
            pid = started[-1]["pid"]
            if is_ray_worker(pid):
                out[trial_id] = pid
    return out


class SweepEnded(Exception):
    pass


def wait_while_running(proc: Any, condition: Any, timeout: float = 600) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SweepEnded
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail("the chaos sweep made no progress")


def test_chaos_sweep_ends_with_the_results_of_an_undisturbed_one(tmp_path: Path, shards: Path) -> None:  # noqa: F811
    storage = tmp_path / "sweeps"
    reference_space = write_yaml(tmp_path / "reference.yaml", chaos_doc(shards, "reference"))
    code, log = run_cli("sweep", str(reference_space), "--storage", str(storage), timeout=900)
    assert code == 0, log[-4000:]
    reference = results_by_config(storage / "reference")
    assert len(reference) == 12 and all(r["status"] == "FINISHED" for r in reference.values())

    rng = random.Random(SEED)
    chaos_space = write_yaml(tmp_path / "chaos.yaml", chaos_doc(shards, "chaos"))
    sweep_dir = storage / "chaos"
    log_file = tmp_path / "chaos.log"
    proc = start("sweep", str(chaos_space), "--storage", str(storage), log=log_file)
    kills: list[tuple[str, str, float]] = []
    t0 = time.monotonic()

    def kill_driver(kind: str) -> Any:
        kill_group(proc)
        proc.wait(timeout=60)
        kills.append((kind, "", round(time.monotonic() - t0, 1)))
        time.sleep(rng.uniform(1.0, 3.0))
        return start("resume", str(sweep_dir), log=log_file)

    try:
        for i, action in enumerate(SCHEDULE):
            try:
                target = i * 12 // len(SCHEDULE)
                wait_while_running(proc, lambda n=target: (sweep_dir / "trials").is_dir() and len(finished_trials(sweep_dir)) >= n)
                if action == "final":
                    before = finished_trials(sweep_dir)
                    wait_while_running(proc, lambda old=before: finished_trials(sweep_dir) - old)
                    time.sleep(rng.uniform(0.2, 1.5))
                    if proc.poll() is None:
                        proc = kill_driver("driver after a final evaluation")
                    continue
                time.sleep(rng.uniform(1.0, 6.0))
                running = wait_while_running(proc, lambda: training_trials(sweep_dir))
            except SweepEnded:
                break
            if action == "worker":
                trial_id = rng.choice(sorted(running))
                try:
                    os.kill(running[trial_id], signal.SIGKILL)
                except ProcessLookupError:
                    continue
                kills.append(("worker", trial_id, round(time.monotonic() - t0, 1)))
            else:
                proc = kill_driver("driver")
        code = finish(proc, 1200)
    finally:
        kill_group(proc)
    log = log_file.read_text(errors="replace")
    assert code == 0, f"kills {kills}\n{log[-5000:]}"
    assert sum(k[0].startswith("driver") for k in kills) >= 3 and sum(k[0] == "worker" for k in kills) >= 4, kills

    # The faults did hit training: some trials started again from a checkpoint.
    resumed = [e for evs in events(sweep_dir).values() for e in [x for x in evs if x["event"] == "start"][1:]]
    assert resumed and any(e["epoch"] >= 1 for e in resumed), (kills, resumed)

    chaos = results_by_config(sweep_dir)
    assert sorted(chaos) == sorted(reference), "every (cell, seed) trial ran, once"
    differences = []
    for key, ref in sorted(reference.items()):
        got = chaos[key]
        if got["status"] != "FINISHED":
            differences.append(f"{key}: run {got['status']}")
        for metric in METRICS:
            a, b = ref[metric], got[metric]
            if a is None or b is None or abs(a - b) > TOLERANCE:
                differences.append(f"{key} {got['trial_id']}: {metric} {b} (undisturbed: {a})")
    assert not differences, f"kills {kills}\n" + "\n".join(differences)

    # Ray's view (the leaderboard) agrees: every trial there, with the same metrics as in MLflow.
    board = leaderboard_by_trial(sweep_dir)
    assert len(board) == 12
    for key, got in chaos.items():
        row = board[got["trial_id"]]
        assert not row.get("failure"), (key, row)
        for metric in ("probe_auc", "linear.test_auc"):
            assert abs(float(row[metric]) - got[metric]) <= TOLERANCE, (key, metric, row[metric], got[metric])
