"""A real two-objective sweep on synthetic data with a device-hour budget, then `ecg-tune dashboard` on it
(issue #18 B). Starts Ray: slow, with a timeout, and kills the process groups it started."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

BUDGET_H = 0.0002
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}


def _space(tmp: Path, shards: Path) -> Path:
    doc = {
        "name": "goals",
        "data": {"pretrain": [str(shards)], "downstream": str(shards)},
        "objective": {"metric": ["probe_auc", "device_hours"], "mode": ["max", "min"],
                      "constraints": {"params": {"max": 10_000_000}}},
        # A trial holds 1 CPU for ~1 s (CI) to ~10 s (a loaded machine); the budget (0.72 device-seconds)
        # is spent by the first one, whatever the machine's speed, so the later trials never start.
        "budget": {"trials": 6, "max_epochs": 1, "grace_period": 1, "max_concurrent": 1, "device_hours": BUDGET_H},
        "resources": {"cpu": 1},
        "scheduler": "fifo",
        "searcher": {"sampler": "tpe", "seed": 0, "n_startup_trials": 2},
        "fixed": {"encoder.name": "xresnet1d50", "encoder.width": 8, "train.batch_size": 32,
                  "evaluation.probe_epochs": 3, "evaluation.protocols": "linear", "evaluation.linear_epochs": 1,
                  "evaluation.bootstrap": 20, "method.name": "simclr"},
        "space": {"optim.lr": {"float": [1e-4, 1e-2], "log": True}},
    }
    path = tmp / "space.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _run(args: list[str], timeout: int) -> subprocess.CompletedProcess:
    proc = subprocess.Popen([sys.executable, "-m", "ecg_tune.cli", *args], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        _kill(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_objective_sweep_with_a_device_hour_budget_then_the_dashboard(tmp_path: Path) -> None:
    import optuna

    from ecg_tune.data.synthetic import write_synthetic

    shards = tmp_path / "data"
    write_synthetic(shards, n_records=200, seed=0)
    res = _run(["sweep", str(_space(tmp_path, shards)), "--storage", str(tmp_path / "sweeps")], timeout=300)
    assert res.returncode == 0, res.stdout[-4000:]
    sweep = tmp_path / "sweeps" / "goals"
    # One compact progress view, not Ray's tables; no ANSI codes in a pipe.
    assert "sweep: trials" in res.stdout and "\x1b[" not in res.stdout
    assert "Trial status" not in res.stdout
    # The budget stopped launching trials; the ledger and the study say so.
    study = optuna.load_study(study_name="goals", storage=f"sqlite:///{sweep / 'optuna.db'}")
    assert 1 <= len(study.trials) < 6, res.stdout[-3000:]
    ledger = json.loads((sweep / "cost.json").read_text())
    assert sum(ledger.values()) / 3600 >= BUDGET_H
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert complete and all(len(t.values) == 2 and t.constraints.get("params", 1) <= 0 for t in complete)
    # The leaderboard marks the Pareto front and shows what trials cost.
    assert "◆" in res.stdout and "device_hours" in res.stdout

    port = _free_port()
    dash = subprocess.Popen([sys.executable, "-m", "ecg_tune.cli", "dashboard", str(sweep), "--port", str(port)],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline, body = time.monotonic() + 60, None
        while time.monotonic() < deadline and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    body = json.loads(r.read())
            except OSError:
                assert dash.poll() is None, dash.stdout.read() if dash.stdout else ""
                time.sleep(0.5)
        assert body is not None, "the dashboard never answered"
        (entry,) = [s for s in body["study_summaries"] if s["study_name"] == "goals"]
        study_id = entry["study_id"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study_id}", timeout=10) as r:
            detail = json.loads(r.read())
        assert len(detail["trials"]) == len(study.trials)
    finally:
        _kill(dash)


def test_the_report_of_a_two_objective_sweep_shows_its_pareto_front(tmp_path: Path) -> None:
    from ecg_tune.data.synthetic import write_synthetic

    shards = tmp_path / "data"
    write_synthetic(shards, n_records=200, seed=0)
    space = _space(tmp_path, shards)
    doc = yaml.safe_load(space.read_text())
    doc["budget"] = {**doc["budget"], "trials": 3, "device_hours": None}  # every trial runs
    doc["budget"] = {k: v for k, v in doc["budget"].items() if v is not None}
    space.write_text(yaml.safe_dump(doc))
    res = _run(["sweep", str(space), "--storage", str(tmp_path / "sweeps")], timeout=300)
    assert res.returncode == 0, res.stdout[-4000:]
    sweep = tmp_path / "sweeps" / "goals"
    rep = _run(["report", str(sweep)], timeout=200)
    assert rep.returncode == 0, rep.stdout[-4000:]
    import pandas as pd

    board = pd.read_csv(sweep / "report" / "leaderboard.csv")
    complete = board[board["budget_complete"].astype(bool)]
    assert len(complete) == 3 and complete["pareto"].astype(bool).any()
    # The front by hand: no complete trial has both a higher probe_auc and fewer device-hours.
    for _, a in complete.iterrows():
        dominated = any(b["probe_auc"] >= a["probe_auc"] and b["device_hours"] <= a["device_hours"]
                        and (b["probe_auc"], b["device_hours"]) != (a["probe_auc"], a["device_hours"])
                        for _, b in complete.iterrows())
        assert bool(a["pareto"]) == (not dominated)
    assert "◆" in (sweep / "report" / "index.html").read_text()


def test_a_spent_device_hour_budget_holds_across_a_driver_kill_and_resume(tmp_path: Path) -> None:
    """The ledger (cost.json) outlives the driver: a resumed sweep whose budget was spent before the kill
    launches no new trial (without the ledger it would start the remaining five)."""
    import optuna

    from ecg_tune.data.synthetic import write_synthetic
    from tests.tune.conftest import ENV as CLI_ENV
    from tests.tune.conftest import finish, kill_group, run_cli, start, wait_for

    shards = tmp_path / "data"
    write_synthetic(shards, n_records=200, seed=0)
    space = _space(tmp_path, shards)
    doc = yaml.safe_load(space.read_text())
    doc["budget"] = {**doc["budget"], "max_epochs": 3}  # the first trial still trains when the driver dies
    doc["objective"] = {"metric": "probe_auc", "mode": "max"}
    doc["searcher"] = {"sampler": "random", "seed": 0}
    space.write_text(yaml.safe_dump(doc))
    sweep = tmp_path / "sweeps" / "goals"
    driver = start("sweep", str(space), "--storage", str(tmp_path / "sweeps"), log=tmp_path / "first.log")
    try:
        def spent() -> bool:
            try:
                return sum(json.loads((sweep / "cost.json").read_text()).values()) / 3600 >= BUDGET_H
            except (OSError, ValueError):
                return False

        wait_for(spent, 240, "the ledger to record the budget as spent", driver)
        kill_group(driver)
    finally:
        finish(driver, 60)
    storage = f"sqlite:///{sweep / 'optuna.db'}"
    before = len(optuna.load_study(study_name="goals", storage=storage).trials)
    code, out = run_cli("resume", str(sweep), timeout=300, env={**CLI_ENV, **ENV})
    assert code == 0, out[-4000:]
    after = optuna.load_study(study_name="goals", storage=storage).trials
    assert len(after) == before < 6, out[-3000:]


def test_a_warm_started_sweep_continues_from_the_old_study(tmp_path: Path) -> None:
    """`ecg-tune sweep NEW --warm-from OLD` through the CLI: the new study holds the old sweep's trials
    (marked with where they come from) before its own, which then run as usual."""
    import optuna

    from ecg_tune.data.synthetic import write_synthetic

    shards = tmp_path / "data"
    write_synthetic(shards, n_records=200, seed=0)
    space = _space(tmp_path, shards)
    doc = yaml.safe_load(space.read_text())
    doc.update(objective={"metric": "probe_auc", "mode": "max"}, searcher={"sampler": "random", "seed": 0})
    doc["budget"] = {"trials": 3, "max_epochs": 1, "grace_period": 1, "max_concurrent": 1}
    space.write_text(yaml.safe_dump(doc))
    old = _run(["sweep", str(space), "--storage", str(tmp_path / "sweeps")], timeout=300)
    assert old.returncode == 0, old.stdout[-4000:]
    doc.update(name="wider", searcher={"sampler": "tpe", "seed": 0, "n_startup_trials": 3})
    doc["budget"]["trials"] = 2
    doc["space"] = {"optim.lr": {"float": [1e-5, 1e-1], "log": True}}  # widened
    wider = tmp_path / "wider.yaml"
    wider.write_text(yaml.safe_dump(doc))
    new = _run(["sweep", str(wider), "--storage", str(tmp_path / "sweeps"),
                "--warm-from", str(tmp_path / "sweeps" / "goals")], timeout=300)
    assert new.returncode == 0, new.stdout[-4000:]
    old_trials = optuna.load_study(study_name="goals", storage=f"sqlite:///{tmp_path / 'sweeps/goals/optuna.db'}").trials
    trials = optuna.load_study(study_name="wider", storage=f"sqlite:///{tmp_path / 'sweeps/wider/optuna.db'}").trials
    warm = [t for t in trials if "warm.from" in t.user_attrs]
    assert len(warm) == 3 == len(old_trials)
    assert sorted(t.params["optim.lr"] for t in warm) == sorted(t.params["optim.lr"] for t in old_trials)
    own = [t for t in trials if "warm.from" not in t.user_attrs]
    assert len(own) == 2 and all(t.state.name == "COMPLETE" for t in own)
