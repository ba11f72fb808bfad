"""Real local Ray sweeps through the CLI: conditional space → trials → MLflow; driver and worker kills.

These start Ray and train tiny encoders on synthetic shards, so they are marked slow. Every one has
a timeout and kills the process group it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.tune.conftest import trial_runs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1", "RAY_DEDUP_LOGS": "0"}


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ecg_tune.data.synthetic import write_synthetic

    out = tmp_path_factory.mktemp("synthetic") / "data"
    write_synthetic(out, n_records=240, seed=0)
    return out


def tiny_space(tmp: Path, shards: Path, **over: object) -> Path:
    doc = {
        "name": "tiny",
        "data": {"pretrain": [str(shards)], "downstream": str(shards)},
        "objective": {"metric": "probe_auc", "mode": "max"},
        "budget": {"trials": 4, "max_epochs": 2, "grace_period": 1, "max_concurrent": 2},
        "resources": {"cpu": 1},
        "scheduler": "fifo",
        "searcher": {"sampler": "tpe", "seed": 0, "n_startup_trials": 2},
        "fixed": {
            "encoder.name": "xresnet1d50", "encoder.width": 8, "train.batch_size": 32,
            "evaluation.probe_epochs": 5, "evaluation.protocols": "linear", "evaluation.linear_epochs": 2,
            "evaluation.bootstrap": 50,
        },
        "space": {
            "method.name": {"branch": {"simclr": {"method.temperature": {"float": [0.1, 1.0], "log": True}},
                                       "byol": {"method.tau0": {"float": [0.99, 0.999]}}}},
            "optim.lr": {"float": [1e-4, 1e-2], "log": True},
        },
    }
    for key, value in over.items():
        doc[key] = value
    path = tmp / "space.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    # os.environ as it is now: a fixture may have put a plug-in on PYTHONPATH.
    proc = subprocess.Popen([sys.executable, "-m", "ecg_tune.cli", *args], env={**os.environ, **ENV}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        _kill_group(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def starts(sweep_dir: Path) -> dict[str, list[dict]]:
    out = {}
    for events in (sweep_dir / "trials").glob("*/events.jsonl"):
        out[events.parent.name] = [json.loads(line) for line in events.read_text().splitlines() if '"start"' in line]
    return out


def sweep_until_then_kill(space: Path, storage: Path, ready, what: str, *, settle_s: float = 0.0) -> None:
    """Start `ecg-tune sweep`, wait until `ready()` (at most 400 s), wait `settle_s`, SIGKILL its group."""
    proc = subprocess.Popen([sys.executable, "-m", "ecg_tune.cli", "sweep", str(space), "--storage", str(storage)],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 400
        while not ready():
            if time.monotonic() > deadline:
                pytest.fail(f"the sweep never reached {what}")
            time.sleep(0.3)
        time.sleep(settle_s)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def probes_of(sweep_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (sweep_dir / "trials").glob("*/probe.json")] if sweep_dir.exists() else []


def pbt_space(tmp_path: Path, shards: Path, epochs: int) -> Path:
    """4 SimCLR members probed every epoch, exploiting/exploring every epoch over optim.lr; the bottom
    half exploits the top half (with Ray's quarter, one member of four, exploits were rare: CI once
    saw none in 4 epochs)."""
    space = tiny_space(tmp_path, shards, scheduler="pbt", budget={
        "trials": 4, "max_epochs": epochs, "grace_period": 1, "max_concurrent": 4, "perturbation_interval": 1,
        "quantile_fraction": 0.5},
        resources={"cpu": 0.5}, space={"optim.lr": {"float": [1e-4, 1e-1], "log": True}})
    doc = yaml.safe_load(space.read_text())
    doc["fixed"].update({"method.name": "simclr", "evaluation.probe_every": 1})
    space.write_text(yaml.safe_dump(doc))
    return space


def test_sweep_end_to_end(tmp_path: Path, shards: Path) -> None:
    space = tiny_space(tmp_path, shards)
    done = cli("sweep", str(space), "--storage", str(tmp_path / "sweeps"))
    assert done.returncode == 0, done.stdout[-4000:]
    sweep_dir = tmp_path / "sweeps" / "tiny"
    client, trials, parent = trial_runs(sweep_dir)
    assert parent.info.status == "FINISHED"
    assert len(trials) == 4 and all(r.info.status == "FINISHED" for r in trials)
    for run in trials:
        p, m = run.data.params, run.data.metrics
        assert p["encoder.width"] == "8" and "optim.lr" in p
        assert ("method.temperature" in p) == (p["method.name"] == "simclr")
        assert ("method.tau0" in p) == (p["method.name"] == "byol")
        assert 0.0 <= m["probe_auc"] <= 1.0 and 0.0 <= m["linear.test_auc"] <= 1.0
        assert m["linear.test_ci_low"] <= m["linear.test_auc"] <= m["linear.test_ci_high"]
        history = client.get_metric_history(run.info.run_id, "probe_auc")
        assert sorted(h.step for h in history) == [1, 2]
        names = {a.path for a in client.list_artifacts(run.info.run_id, "results")}
        assert {"results/encoder.ckpt", "results/linear.json"} <= names
    assert (sweep_dir / "leaderboard.csv").is_file()

    # The best encoder is in the registry and embeds raw arrays without the platform.
    import mlflow
    import numpy as np

    mlflow.set_tracking_uri(json.loads((sweep_dir / "ecg_tune_sweep.json").read_text())["tracking_uri"])
    model = mlflow.pyfunc.load_model("models:/tiny-encoder/1")
    emb = np.asarray(model.predict(np.random.default_rng(0).normal(size=(3, 12, 1000)).astype(np.float32)))
    assert emb.shape == (3, 64) and np.isfinite(emb).all()  # concat(max, avg) of width 8 x expansion 4
    assert "best encoder" in done.stdout and "leaderboard" in done.stdout

    # The report reads MLflow back: its leaderboard equals the runs' final objective values.
    import pandas as pd

    done = cli("report", str(sweep_dir))
    assert done.returncode == 0, done.stdout[-3000:]
    board = pd.read_csv(sweep_dir / "report" / "leaderboard.csv")
    by_trial = {r.data.tags["ecg_tune.trial_id"]: r.data.metrics["probe_auc"] for r in trials}
    for _, row in board.iterrows():
        assert abs(row["probe_auc"] - by_trial[str(row["trial_id"])]) < 1e-9
    html = (sweep_dir / "report" / "index.html").read_text()
    assert "<table" in html and "data:image/png;base64," in html


def test_driver_killed_then_resume(tmp_path: Path, shards: Path) -> None:
    space = tiny_space(tmp_path, shards, budget={"trials": 4, "max_epochs": 4, "max_concurrent": 2})
    sweep_dir = tmp_path / "sweeps" / "tiny"
    def one_finished_one_midway() -> bool:
        finished = list((sweep_dir / "trials").glob("*/artifacts/linear.json")) if sweep_dir.exists() else []
        return bool(finished) and any(1 <= p["epoch"] < 4 for p in probes_of(sweep_dir))

    sweep_until_then_kill(space, tmp_path / "sweeps", one_finished_one_midway, "one finished trial and one mid-way")
    time.sleep(3)
    before = starts(sweep_dir)
    done = cli("resume", str(sweep_dir))
    assert done.returncode == 0, done.stdout[-4000:]
    after = starts(sweep_dir)
    _, runs, _ = trial_runs(sweep_dir)
    # A trial that started within Ray's snapshot period before the kill is unknown to the resumed
    # sweep: its run is deleted if empty, else ended KILLED and tagged orphaned (tracking.end_orphans).
    orphans = [r for r in runs if r.data.tags.get("ecg_tune.state") == "orphaned"]
    assert all(r.info.status == "KILLED" for r in orphans)
    trials = [r for r in runs if r not in orphans]
    assert len(trials) == 4, "exactly one MLflow run per trial"
    assert all(r.info.status == "FINISHED" for r in trials)
    assert all(float(r.data.metrics["epoch"]) == 4 for r in trials)
    for trial_id, events in before.items():
        if trial_id not in {r.data.tags["ecg_tune.trial_id"] for r in trials}:
            continue  # an orphan
        finished_before = (sweep_dir / "trials" / trial_id / "artifacts" / "linear.json").exists() and len(events) == len(after[trial_id])
        if finished_before:
            assert len(after[trial_id]) == 1, f"finished trial {trial_id} was rerun"
    continued = [e for ev in after.values() for e in ev[1:]]
    assert continued and all(e["epoch"] >= 1 for e in continued), "interrupted trials continue, not restart"


def test_diverging_trial_ends_with_reason_and_sweep_goes_on(tmp_path: Path, shards: Path, toy_plugin: Path) -> None:
    # The toy plug-in method (tests/conftest.py) turns its loss NaN after a step when asked: a divergence
    # on purpose (an lr large enough to diverge at once is refused by the config's range check).
    fixed = {"encoder.name": "toy_enc", "train.batch_size": 32, "evaluation.probe_epochs": 5,
             "evaluation.protocols": "linear", "evaluation.linear_epochs": 2, "evaluation.bootstrap": 50}
    space = tiny_space(tmp_path, shards, space={}, fixed=fixed, ablation={
        "baseline": {"method.name": "toy"}, "factors": {"method.nan_after_steps": [1]}, "seeds": [0]})
    done = cli("sweep", str(space), "--storage", str(tmp_path / "sweeps"))
    assert (tmp_path / "sweeps" / "tiny" / "ecg_tune_sweep.json").is_file(), done.stdout[-3000:]
    _, trials, _ = trial_runs(tmp_path / "sweeps" / "tiny")
    by_cell = {r.data.tags["ecg_tune.cell"]: r for r in trials}
    bad, good = by_cell["method.nan_after_steps=1"], by_cell["baseline"]
    assert bad.info.status == "FAILED" and "diverged" in bad.data.tags["ecg_tune.failure_reason"]
    assert good.info.status == "FINISHED" and "linear.test_auc" in good.data.metrics
    assert done.returncode == 0, done.stdout[-3000:]


def test_quickstart_command(tmp_path: Path) -> None:
    """The README's main job, on fewer records: synthetic data → shards → sweep → leaderboard."""
    done = cli("quickstart", "--out", str(tmp_path / "qs"), "--records", "300", timeout=850)
    assert done.returncode == 0, done.stdout[-4000:]
    assert (tmp_path / "qs" / "data" / "manifest.json").is_file()
    assert "leaderboard (by probe_auc;" in done.stdout and "mlflow ui --backend-store-uri sqlite:///" in done.stdout
    sweep_dir = next((tmp_path / "qs" / "sweeps").iterdir())
    _, trials, parent = trial_runs(sweep_dir)
    assert len(trials) == 6 and parent.info.status == "FINISHED"
    assert all(r.info.status == "FINISHED" for r in trials)


def test_pbt_exploits_and_explores(tmp_path: Path, shards: Path) -> None:
    """PBT (no search algorithm): a population from the space; weak trials continue a stronger one's
    weights under a mutated optim.lr, and MLflow shows the lr each trial trained with over time."""
    epochs = 5
    space = pbt_space(tmp_path, shards, epochs=epochs)
    done = cli("sweep", str(space), "--storage", str(tmp_path / "sweeps"))
    assert done.returncode == 0, done.stdout[-4000:]
    sweep_dir = tmp_path / "sweeps" / "tiny"
    client, trials, parent = trial_runs(sweep_dir)
    assert parent.info.status == "FINISHED" and len(trials) == 4
    by_id = {r.data.tags["ecg_tune.trial_id"]: r for r in trials}
    exploits = 0
    for trial_id, events in starts(sweep_dir).items():
        for e in events[1:]:
            if e["from_trial"] not in (None, trial_id):  # another trial's weights: an exploit
                exploits += 1
                assert e["epoch"] < epochs, "exploited on its final result: no epoch left to train the mutated lr"
                lrs = {m.value for m in client.get_metric_history(by_id[trial_id].info.run_id, "config.optim.lr")}
                assert len(lrs) >= 2, "the exploiting trial continued under a mutated lr"
                assert all(1e-4 <= v <= 1e-1 for v in lrs)
    assert exploits >= 1, starts(sweep_dir)
    for run in trials:
        assert run.info.status == "FINISHED" and run.data.metrics["epoch"] == epochs
        assert "linear.test_auc" in run.data.metrics


def test_asha_promotion_pauses_promotes_and_stops(tmp_path: Path, shards: Path) -> None:
    """Successive halving by promotion on real Ray trials: 6 trials pause at epoch 1, the best
    floor(6/3) = 2 or more (ASHA promotes a trial that ranks in the top third when it arrives) resume
    from their checkpoints to the full 3 epochs, the rest are stopped; Optuna sees those as PRUNED."""
    space = tiny_space(tmp_path, shards, scheduler="asha_promotion", budget={
        "trials": 6, "max_epochs": 3, "grace_period": 1, "reduction_factor": 3, "max_concurrent": 2})
    done = cli("sweep", str(space), "--storage", str(tmp_path / "sweeps"))
    assert done.returncode == 0, done.stdout[-4000:]
    sweep_dir = tmp_path / "sweeps" / "tiny"
    _, trials, parent = trial_runs(sweep_dir)
    assert parent.info.status == "FINISHED" and len(trials) == 6
    assert all(r.info.status == "FINISHED" for r in trials)
    final = sorted(int(r.data.metrics["epoch"]) for r in trials)
    assert set(final) <= {1, 3} and 2 <= final.count(3) <= 4
    for trial_id, events in starts(sweep_dir).items():
        run = next(r for r in trials if r.data.tags["ecg_tune.trial_id"] == trial_id)
        if int(run.data.metrics["epoch"]) == 3:
            assert "linear.test_auc" in run.data.metrics
        assert all(e["epoch"] == 1 for e in events[1:]), "a paused trial resumes from its rung checkpoint"


def test_pbt_sweep_survives_a_driver_kill(tmp_path: Path, shards: Path) -> None:
    """A PBT sweep killed mid-way resumes: every member finishes its epochs with final metrics."""
    space = pbt_space(tmp_path, shards, epochs=5)
    sweep_dir = tmp_path / "sweeps" / "tiny"
    sweep_until_then_kill(space, tmp_path / "sweeps", lambda: any(p["epoch"] >= 2 for p in probes_of(sweep_dir)),
                          "epoch 2")
    time.sleep(2)
    done = cli("resume", str(sweep_dir))
    assert done.returncode == 0, done.stdout[-4000:]
    _, runs, parent = trial_runs(sweep_dir)
    trials = [r for r in runs if r.data.tags.get("ecg_tune.state") != "orphaned"]
    assert parent.info.status == "FINISHED" and len(trials) == 4
    for run in trials:
        assert run.info.status == "FINISHED" and run.data.metrics["epoch"] == 5
        assert "linear.test_auc" in run.data.metrics


def test_asha_promotion_keeps_its_rungs_across_a_driver_kill(tmp_path: Path, shards: Path) -> None:
    """After `resume`, trials that waited at a rung wait again (they are not all trained on): the rungs
    travel in Ray's experiment snapshot through the scheduler's state callback."""
    space = tiny_space(tmp_path, shards, scheduler="asha_promotion", budget={
        "trials": 9, "max_epochs": 3, "grace_period": 1, "reduction_factor": 3, "max_concurrent": 2})
    sweep_dir = tmp_path / "sweeps" / "tiny"
    # 5 trials at their first rung, then past one experiment snapshot (2 s)
    sweep_until_then_kill(space, tmp_path / "sweeps", lambda: len(probes_of(sweep_dir)) >= 5,
                          "5 trials at their first rung", settle_s=3)
    done = cli("resume", str(sweep_dir))
    assert done.returncode == 0, done.stdout[-4000:]
    _, runs, parent = trial_runs(sweep_dir)
    trials = [r for r in runs if r.data.tags.get("ecg_tune.state") != "orphaned"]
    assert parent.info.status == "FINISHED" and len(trials) == 9
    final = sorted(int(r.data.metrics["epoch"]) for r in trials)
    # 9 trials, rf 3: successive halving takes 3 to epoch 3; ASHA's final early promotions add at
    # most 2 (at n = 3 and n = 6 the top third is decided on fewer trials). Without the rungs every
    # trial waiting at the kill would train on.
    assert set(final) <= {1, 3} and 3 <= final.count(3) <= 5, final
