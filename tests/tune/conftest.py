"""Helpers of the sweep tests: small synthetic shards, tiny valid spaces, a guard that fails a test if
a sweep would start Ray (for checks that must happen before that), the CLI in its own process group
(started, waited for and always killed with everything it started), and readers of what a sweep left
(its settings, MLflow runs and trial event logs); spec helpers for the schema tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ecg_tune.errors import ConfigError
from ecg_tune.tune.spaces import parse_spec

# A minimal valid spec, and one with a conditional space (test_spaces.py, test_searcher.py, ...).
BASE = {
    "name": "t",
    "data": {"pretrain": ["/d"], "downstream": "/d"},
    "budget": {"trials": 4, "max_epochs": 3},
}
SEARCHER_SPEC = {
    "name": "s",
    "data": {"pretrain": ["/d"], "downstream": "/d"},
    "budget": {"trials": 6, "max_epochs": 4, "grace_period": 1},
    "searcher": {"sampler": "tpe", "seed": 0, "n_startup_trials": 2},
    "space": {"method.name": {"branch": {"simclr": {"method.temperature": {"float": [0.1, 1.0]}}, "byol": {}}},
              "optim.lr": {"float": [1e-4, 1e-2], "log": True}},
}


def spec_of(extra: dict) -> Any:
    return parse_spec({**BASE, **extra})


def error_key(extra: dict) -> str:
    with pytest.raises(ConfigError) as info:
        spec_of(extra)
    return str(info.value.key)


@pytest.fixture(scope="session")
def small_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ecg_tune.data.synthetic import write_synthetic

    out = tmp_path_factory.mktemp("small-synthetic") / "data"
    write_synthetic(out, n_records=240, seed=0)
    return out


def small_space(shards: Path, **over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "small",
        "data": {"pretrain": [str(shards)], "downstream": str(shards)},
        "objective": {"metric": "probe_auc", "mode": "max"},
        "budget": {"trials": 2, "max_epochs": 1, "grace_period": 1, "max_concurrent": 2},
        "resources": {"cpu": 1},
        "scheduler": "fifo",
        "searcher": {"sampler": "random", "seed": 0},
        "fixed": {"encoder.name": "xresnet1d50", "encoder.width": 8, "train.batch_size": 32,
                  "evaluation.probe_epochs": 2, "evaluation.protocols": "linear", "evaluation.linear_epochs": 1,
                  "evaluation.bootstrap": 20, "method.name": "simclr"},
        "space": {"optim.lr": {"float": [1e-4, 1e-2], "log": True}},
    }
    doc.update(over)
    return doc


def write_space(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


class RayWouldStart(AssertionError):
    pass


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the sweep gets as far as starting Ray."""
    import ecg_tune.tune.sweep as sweep_module

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise RayWouldStart("the sweep passed every check and would start Ray now")

    monkeypatch.setattr(sweep_module, "_init_ray", refuse)


ENV = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
ENV.update({"RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1", "RAY_DEDUP_LOGS": "0"})


# ------------------------------------------------------------------- sweeps through the real CLI
# (test_faults.py, test_chaos.py, test_trial_workers.py)


def tiny_doc(shards: Path, name: str = "tiny", **over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": name,
        "data": {"pretrain": [str(shards)], "downstream": str(shards)},
        "objective": {"metric": "probe_auc", "mode": "max"},
        "budget": {"trials": 2, "max_epochs": 3, "max_concurrent": 2},
        "resources": {"cpu": 1},
        "scheduler": "fifo",
        "searcher": {"sampler": "random", "seed": 0},
        "fixed": {
            "encoder.name": "xresnet1d50", "encoder.width": 8, "train.batch_size": 32, "train.steps_per_epoch": 3,
            "data.max_pretrain_records": 120, "evaluation.probe_epochs": 2, "evaluation.probe_max_records": 60,
            "evaluation.protocols": "linear", "evaluation.linear_epochs": 2, "evaluation.bootstrap": 20,
        },
        "space": {"optim.lr": {"float": [1e-4, 1e-2], "log": True}},
    }
    doc.update(over)
    return doc


def write_yaml(path: Path, doc: Any) -> Path:
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def start(*args: str, env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen:
    """`ecg-tune <args>` in its own process group (so that it and everything it starts can be killed)."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 (closed by the child's exit)
    return subprocess.Popen([sys.executable, "-m", "ecg_tune.cli", *args], env=env or ENV, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def finish(proc: subprocess.Popen, timeout: float) -> int:
    """Wait for the command; kill its process group whatever happens (leftover Ray processes included)."""
    try:
        return proc.wait(timeout=timeout)
    finally:
        kill_group(proc)
        proc.wait(timeout=30)


def run_cli(*args: str, timeout: float = 600, env: dict[str, str] | None = None) -> tuple[int, str]:
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"ecg-tune-test-{os.getpid()}-{time.monotonic_ns()}.log"
    proc = start(*args, env=env, log=log)
    try:
        code = finish(proc, timeout)
        return code, log.read_text(errors="replace")
    finally:
        log.unlink(missing_ok=True)


def settings_of(sweep_dir: Path) -> dict[str, Any]:
    return json.loads((sweep_dir / "ecg_tune_sweep.json").read_text())


def trial_runs(sweep_dir: Path, tracking_uri: str | None = None) -> tuple[Any, list, Any]:
    from mlflow.tracking import MlflowClient

    settings = settings_of(sweep_dir)
    client = MlflowClient(tracking_uri or settings["tracking_uri"])
    runs = client.search_runs([settings["experiment_id"]], max_results=1000)
    trials = [r for r in runs if r.data.tags.get("ecg_tune.role") == "trial"]
    parent = next(r for r in runs if r.data.tags.get("ecg_tune.role") == "sweep")
    return client, trials, parent


def events(sweep_dir: Path) -> dict[str, list[dict]]:
    out = {}
    for path in sorted((sweep_dir / "trials").glob("*/events.jsonl")):
        out[path.parent.name] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return out


def wait_for(condition: Callable[[], Any], timeout: float, what: str, proc: subprocess.Popen | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the process ended (exit {proc.returncode}) before: {what}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for: {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ecg_tune.data.synthetic import write_synthetic

    out = tmp_path_factory.mktemp("synthetic") / "data"
    write_synthetic(out, n_records=240, seed=0)
    return out
