"""The MLflow tracking callback against a real sqlite store: one run per trial, resumable, never fatal."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.tracking import MlflowClient

from ecg_tune.tune.tracking import MLflowTracking, end_orphans, ensure_experiment, find_runs, numeric_metrics


@dataclass
class FakeTrial:
    trial_id: str
    config: dict = field(default_factory=dict)
    last_result: dict = field(default_factory=dict)
    error_file: str | None = None


def make(tmp_path: Path) -> tuple[MlflowClient, MLflowTracking, str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = ensure_experiment(client, "sweep-a")
    parent = client.create_run(exp, tags={"ecg_tune.role": "sweep", "ecg_tune.sweep": "sweep-a"})
    cb = MLflowTracking(uri, exp, parent.info.run_id, "sweep-a")
    cb.setup()
    return client, cb, exp


def trial_runs(client: MlflowClient, exp: str) -> list:
    return find_runs(client, exp, ecg_tune__role="trial")


def test_numeric_metrics_filters_ray_keys() -> None:
    result = {"probe_auc": 0.7, "loss": float("nan"), "done": True, "pid": 5, "epoch": 2, "config/x": 1, "name": "a"}
    assert numeric_metrics(result) == {"probe_auc": 0.7, "epoch": 2.0}


def test_runs_params_metrics_and_end_states(tmp_path: Path) -> None:
    client, cb, exp = make(tmp_path)
    ok = FakeTrial("t1", {"method.name": "simclr", "optim.lr": 0.001, "augment.pipeline?timeout": True})
    bad = FakeTrial("t2", {"method.name": "byol"})
    diverged = FakeTrial("t3", {"method.name": "swav"})
    for t in (ok, bad, diverged):
        cb.on_trial_start(0, [], t)
    for epoch in (1, 2, 3):
        cb.on_trial_result(0, [], ok, {"epoch": epoch, "probe_auc": 0.5 + epoch / 10, "loss": 3.0 - epoch})
    ok.last_result = {"epoch": 3, "probe_auc": 0.8}
    cb.on_trial_complete(0, [], ok)
    cb.on_trial_error(0, [], bad)
    diverged.last_result = {"epoch": 1, "failure_reason": "non-finite loss nan at epoch 1 step 3"}
    cb.on_trial_complete(0, [], diverged)
    cb.on_experiment_end([])

    runs = {r.data.tags["ecg_tune.trial_id"]: r for r in trial_runs(client, exp)}
    assert set(runs) == {"t1", "t2", "t3"}
    r1 = runs["t1"]
    assert r1.info.status == "FINISHED"
    assert r1.data.params["method.name"] == "simclr" and r1.data.params["optim.lr"] == "0.001"
    assert "augment.pipeline?timeout" not in r1.data.params  # subset switches are not config keys
    assert r1.data.params["train.batch_size"] == "256"  # defaults are logged too
    history = client.get_metric_history(r1.info.run_id, "probe_auc")
    assert [(m.step, round(m.value, 6)) for m in sorted(history, key=lambda m: m.step)] == [(1, 0.6), (2, 0.7), (3, 0.8)]
    assert r1.data.tags["mlflow.parentRunId"] == cb.parent_run_id
    assert runs["t2"].info.status == "FAILED" and runs["t2"].data.tags["ecg_tune.state"] == "error"
    assert runs["t3"].info.status == "FAILED"
    assert runs["t3"].data.tags["ecg_tune.failure_reason"].startswith("non-finite loss")


def test_resume_reuses_the_trials_run(tmp_path: Path) -> None:
    client, cb, exp = make(tmp_path)
    t = FakeTrial("t1", {"seed": 0})
    cb.on_trial_start(0, [], t)
    cb.on_trial_result(0, [], t, {"epoch": 1, "probe_auc": 0.6})
    cb.flush()
    state = cb.get_state()

    # A resumed driver: the callback comes back unpickled (no thread), with its saved state...
    again = pickle.loads(pickle.dumps(cb))
    again.set_state(state)
    again.on_trial_restore(0, [], t)
    again.on_trial_result(0, [], t, {"epoch": 2, "probe_auc": 0.7})
    t.last_result = {"epoch": 2}
    again.on_trial_complete(0, [], t)
    again.flush()
    # ...or with no state at all: it finds the run again by its trial tag.
    fresh = MLflowTracking(cb.tracking_uri, exp, cb.parent_run_id, "sweep-a")
    fresh._attach(t)
    assert fresh.flush()
    assert fresh.trial_runs["t1"] == state["trial_runs"]["t1"]
    runs = trial_runs(client, exp)
    assert len(runs) == 1
    steps = sorted(m.step for m in client.get_metric_history(runs[0].info.run_id, "probe_auc"))
    assert steps == [1, 2]


def test_results_do_not_reattach_the_run(tmp_path: Path, monkeypatch) -> None:
    # Setting RUNNING and checking params is for a trial's (re)start, not for every epoch.
    client, cb, exp = make(tmp_path)
    t = FakeTrial("t1", {"seed": 0})
    cb.on_trial_start(0, [], t)
    cb.flush()
    calls = []
    real_get_run = MlflowClient.get_run
    monkeypatch.setattr(MlflowClient, "get_run", lambda self, run_id: calls.append(run_id) or real_get_run(self, run_id))
    for epoch in (1, 2, 3):
        cb.on_trial_result(0, [], t, {"epoch": epoch, "probe_auc": 0.5})
    cb.flush()
    assert calls == []
    cb.on_trial_restore(0, [], t)  # a retry after an error: the run is set RUNNING again
    again = pickle.loads(pickle.dumps(cb))  # a resumed driver attaches again on its first call
    again.on_trial_result(0, [], t, {"epoch": 4, "probe_auc": 0.6})
    cb.flush()
    again.flush()
    assert len(calls) == 2
    assert client.get_run(cb.trial_runs["t1"]).info.status == "RUNNING"


def test_a_run_left_without_params_by_a_driver_crash_gets_them_on_resume(tmp_path: Path) -> None:
    # The run is created at once, its params are logged in the background: a driver killed in
    # between leaves a run with tags and no params, which `resume` finds again (seen in the chaos
    # test: a FINISHED trial run without a single param).
    client, cb, exp = make(tmp_path)
    crashed = client.create_run(exp, tags={"mlflow.parentRunId": cb.parent_run_id, "ecg_tune.sweep": "sweep-a",
                                           "ecg_tune.trial_id": "t1", "ecg_tune.role": "trial"})
    known = client.create_run(exp, tags={"mlflow.parentRunId": cb.parent_run_id, "ecg_tune.sweep": "sweep-a",
                                         "ecg_tune.trial_id": "t2", "ecg_tune.role": "trial"})
    client.log_param(known.info.run_id, "seed", "3")  # partly logged
    fresh = MLflowTracking(cb.tracking_uri, exp, cb.parent_run_id, "sweep-a")
    fresh.set_state({"trial_runs": {"t2": known.info.run_id}})  # from the callback's saved state
    fresh._attach(FakeTrial("t1", {"seed": 1, "optim.lr": 0.01}))
    assert fresh._attach(FakeTrial("t2", {"seed": 3})) == known.info.run_id
    assert fresh.flush()
    assert fresh.trial_runs["t1"] == crashed.info.run_id
    p1 = client.get_run(crashed.info.run_id).data.params
    p2 = client.get_run(known.info.run_id).data.params
    assert p1["seed"] == "1" and p1["optim.lr"] == "0.01" and p1["train.batch_size"] == "256"
    assert p2["seed"] == "3" and p2["method.name"] == p1["method.name"]
    assert len(trial_runs(client, exp)) == 2


def test_unreachable_server_never_raises(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    cb = MLflowTracking("http://127.0.0.1:9", "0", "parent", "sweep-a")
    cb.worker._backoff_s = 0.05
    cb.trial_runs["t1"] = "run-1"  # known run: no synchronous call needed
    t = FakeTrial("t1")
    cb.on_trial_result(0, [], t, {"epoch": 1, "probe_auc": 0.5})
    cb.on_trial_complete(0, [], t)
    assert cb.flush(timeout_s=3.0) is False  # still pending (kept for a retry), nothing raised
    assert cb.worker.failures >= 1


def test_orphaned_running_runs_are_marked_killed(tmp_path: Path) -> None:
    client, cb, exp = make(tmp_path)
    run = client.create_run(exp, tags={"ecg_tune.sweep": "sweep-a", "ecg_tune.role": "trial", "ecg_tune.trial_id": "x"})
    assert end_orphans(client, exp, "sweep-a") == 2  # the orphan trial run and the still-open parent
    assert client.get_run(run.info.run_id).info.status == "KILLED"


def test_runs_of_trials_ray_never_recorded_are_deleted_when_empty_else_tagged(tmp_path: Path) -> None:
    client, cb, exp = make(tmp_path)
    tags = {"ecg_tune.sweep": "sweep-a", "ecg_tune.role": "trial"}
    known = client.create_run(exp, tags={**tags, "ecg_tune.trial_id": "known"})
    empty = client.create_run(exp, tags={**tags, "ecg_tune.trial_id": "ghost"})
    trained = client.create_run(exp, tags={**tags, "ecg_tune.trial_id": "ghost2"})
    client.log_metric(trained.info.run_id, "probe_auc", 0.6, step=1)
    assert end_orphans(client, exp, "sweep-a", {"known"}) == 4  # + the still-open parent
    assert client.get_run(empty.info.run_id).info.lifecycle_stage == "deleted"
    kept = client.get_run(trained.info.run_id)
    assert kept.info.status == "KILLED" and kept.data.tags["ecg_tune.state"] == "orphaned"
    assert client.get_run(known.info.run_id).info.status == "KILLED"
    assert "ecg_tune.state" not in client.get_run(known.info.run_id).data.tags


# ---------------------------------------------------------------- faults: transient vs permanent
def test_a_deleted_run_is_reported_and_dropped_without_blocking_other_trials(tmp_path: Path) -> None:
    client, cb, exp = make(tmp_path)
    gone, ok = FakeTrial("gone", {"seed": 0}), FakeTrial("ok", {"seed": 1})
    cb.on_trial_start(0, [], gone)
    cb.on_trial_start(0, [], ok)
    assert cb.flush(timeout_s=30)
    client.delete_run(cb.trial_runs["gone"])  # someone deleted it in the UI
    for epoch in (1, 2):
        cb.on_trial_result(0, [], gone, {"epoch": epoch, "probe_auc": 0.5})  # refused: 4xx, never retried
        cb.on_trial_result(0, [], ok, {"epoch": epoch, "probe_auc": 0.6})
    gone.last_result = ok.last_result = {"epoch": 2}
    cb.on_trial_complete(0, [], gone)
    cb.on_trial_complete(0, [], ok)
    assert cb.flush(timeout_s=30)  # nothing left pending: the permanent failures were dropped
    assert cb.worker.failures == 0 and len(cb.worker.dropped) >= 3
    assert all("trial gone" in d for d in cb.worker.dropped)
    run = client.get_run(cb.trial_runs["ok"])
    assert run.info.status == "FINISHED" and len(client.get_metric_history(run.info.run_id, "probe_auc")) == 2


def test_a_rejected_param_is_dropped_and_a_transient_error_is_retried_in_order(tmp_path: Path) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE

    client, cb, exp = make(tmp_path)
    cb.worker._backoff_s = 0.05
    done: list[str] = []
    attempts = {"n": 0}

    def rejected(c: MlflowClient) -> None:
        raise MlflowException("Changing param values is not allowed", error_code=INVALID_PARAMETER_VALUE)

    def flaky(c: MlflowClient) -> None:
        attempts["n"] += 1
        if attempts["n"] < 3:
            raise MlflowException("503 Service Unavailable", error_code=TEMPORARILY_UNAVAILABLE)
        done.append("flaky")

    def connection_lost(c: MlflowClient) -> None:
        if "conn" not in done and attempts.setdefault("conn", 0) < 2:
            attempts["conn"] += 1
            raise ConnectionError("Connection refused")
        done.append("conn")

    cb.worker.submit(rejected, "a rejected param")
    cb.worker.submit(flaky, "a flaky call")
    cb.worker.submit(connection_lost, "a call during a restart")
    cb.worker.submit(lambda c: done.append("last"), "the next call")
    assert cb.flush(timeout_s=10)
    assert done == ["flaky", "conn", "last"]  # transient ones retried, in order
    assert cb.worker.failures == 4
    assert len(cb.worker.dropped) == 1 and cb.worker.dropped[0].startswith("a rejected param")


def test_permanence_of_errors() -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2 as codes

    from ecg_tune.tune.tracking import is_permanent

    assert is_permanent(MlflowException("x", error_code=codes.RESOURCE_DOES_NOT_EXIST))
    assert is_permanent(MlflowException("x", error_code=codes.INVALID_PARAMETER_VALUE))
    assert not is_permanent(MlflowException("x", error_code=codes.REQUEST_LIMIT_EXCEEDED))  # 429
    assert not is_permanent(MlflowException("x", error_code=codes.INTERNAL_ERROR))  # 5xx
    assert not is_permanent(MlflowException("x", error_code=codes.TEMPORARILY_UNAVAILABLE))
    assert not is_permanent(ConnectionError("refused")) and not is_permanent(TimeoutError())


def test_the_driver_never_waits_for_run_creation(tmp_path: Path, monkeypatch) -> None:
    import threading
    import time

    client, cb, exp = make(tmp_path)
    release = threading.Event()
    real_create = MlflowClient.create_run
    monkeypatch.setattr(MlflowClient, "create_run", lambda self, *a, **k: release.wait(30) and real_create(self, *a, **k))
    t = FakeTrial("slow", {"seed": 0})
    start = time.monotonic()
    cb.on_trial_start(0, [], t)  # MLflow hangs: the hook still returns at once
    cb.on_trial_result(0, [], t, {"epoch": 1, "probe_auc": 0.5})
    assert time.monotonic() - start < 1.0
    assert cb.flush(timeout_s=0.5) is False  # queued, not lost
    release.set()
    assert cb.flush(timeout_s=30)
    assert [m.value for m in client.get_metric_history(cb.trial_runs["slow"], "probe_auc")] == [0.5]
