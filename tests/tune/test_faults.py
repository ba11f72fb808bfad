"""Faults around sweeps, through the real CLI: bad search spaces, killed trial workers, a tracking server
that goes away mid-sweep, secrets in the tracking URI.

Fast tests (not slow): every bad search space fails before anything starts, with one line naming the
key and exit status 2; a corrupt trial checkpoint falls back to the other copy.
Slow tests start Ray (and an MLflow server) in their own process groups, which they always kill.
The tiny sweeps train xresnet1d50 at width 8 on 240 synthetic records (as tests/tune/test_sweep.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ecg_tune.cli import main
from tests.tune.conftest import (
    ENV,
    events,
    finish,
    free_port,
    kill_group,
    start,
    tiny_doc,
    trial_runs,
    wait_for,
    write_yaml,
)

REPO = Path(__file__).resolve().parents[2]

# ================================================================================================ search spaces


def _abl(**factors: Any) -> dict[str, Any]:
    return {"space": {}, "ablation": {"baseline": {"method.name": "simclr"}, "factors": factors, "seeds": [0]}}


BAD_SPACES: list[Any] = [
    # (id, changes to the tiny doc, the key path the one error line must name)
    ("unknown-top-level-key", {"schedular": "asha"}, "schedular"),
    ("unknown-budget-key", {"budget": {"trials": 2, "max_epoch": 3}}, "budget.max_epoch"),
    ("unknown-config-key", {"fixed": {"optim.lrr": 0.1}}, "fixed.optim.lrr"),
    ("unknown-method", {"space": {"method.name": {"branch": {"simclr": {}, "moco": {}}}}}, "space.method.name"),
    ("unknown-encoder", {"space": {"encoder.name": {"choice": ["xresnet1d50", "resnet9000"]}}}, "space.encoder.name"),
    ("unknown-augmentation", {"space": {"augment.pipeline": {"subset": {"timeout": {}, "mixup": {}}}}},
     "space.augment.pipeline"),
    ("unknown-augmentation-param", {"space": {"augment.pipeline": {"subset": {
        "timeout": {"augment.timeout.bogus": {"float": [0.1, 0.2]}}}}}},
     "space.augment.pipeline.subset.timeout.augment.timeout.bogus"),
    ("unknown-ablation-key", _abl(**{"optim.lrr": [0.1]}), "ablation.factors.optim.lrr"),
    ("unknown-ablation-method", _abl(**{"method.name": ["moco"]}), "ablation (cell 'method.name=moco').method"),
    ("low-above-high", {"space": {"optim.lr": {"float": [1e-2, 1e-4]}}}, "space.optim.lr.float"),
    ("log-scale-from-zero", {"space": {"optim.lr": {"float": [0.0, 1e-2], "log": True}}}, "space.optim.lr.log"),
    ("infinite-bound", {"space": {"optim.lr": {"float": [1e-4, float("inf")]}}}, "space.optim.lr.float"),
    ("bound-is-text", {"space": {"optim.lr": {"float": ["1e-4", 1e-2]}}}, "space.optim.lr.float"),
    ("temperature-not-positive", {"space": {"method.temperature": {"float": [-1.0, 1.0]}}}, "space.method.temperature"),
    ("grace-above-epochs", {"budget": {"trials": 2, "max_epochs": 3, "grace_period": 5}}, "budget.grace_period"),
    pytest.param("negative-lr", {"fixed": {"optim.lr": -0.1}, "space": {}}, "fixed.optim.lr",
                 id="negative-lr"),
    pytest.param("lr-range-below-zero", {"space": {"optim.lr": {"float": [-1.0, 1.0]}}}, "space.optim.lr",
                 id="lr-range-below-zero"),
    pytest.param("batch-size-zero", {"fixed": {"train.batch_size": 0}}, "fixed.train.batch_size",
                 id="batch-size-zero"),
    pytest.param("window-zero", {"fixed": {"data.window": 0}}, "fixed.data.window",
                 id="window-zero"),
    pytest.param("negative-concurrency", {"budget": {"trials": 2, "max_epochs": 3, "max_concurrent": -1}},
                 "budget.max_concurrent", id="negative-concurrency"),
    pytest.param("negative-time-budget", {"budget": {"trials": 2, "max_epochs": 3, "time_budget_s": -5}},
                 "budget.time_budget_s", id="negative-time-budget"),
    pytest.param("log-is-text", {"space": {"optim.lr": {"float": [1e-4, 1e-2], "log": "no"}}}, "space.optim.lr.log",
                 id="log-is-text"),
    pytest.param("custom-resources-list", {"resources": {"cpu": 1, "custom": ["a", "b"]}}, "resources.custom",
                 id="custom-resources-list"),
    pytest.param("pretrain-is-a-number", {"data": {"pretrain": 5, "downstream": "x"}}, "data.pretrain",
                 id="pretrain-is-a-number"),
    pytest.param("metric-is-a-number", {"objective": {"metric": 5}}, "objective.metric",
                 id="metric-is-a-number"),
    pytest.param("searcher-seed-text", {"searcher": {"sampler": "tpe", "seed": "abc"}}, "searcher.seed",
                 id="searcher-seed-text"),
]


def _bad_space(tmp_path: Path, shards: Path, changes: dict[str, Any]) -> Path:
    return write_yaml(tmp_path / "bad.yaml", tiny_doc(shards, **changes))


def _check_refused(code: int, stderr: str, key: str, storage: Path) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, stderr
    assert len(lines) == 1, f"expected one line, got: {stderr}"
    assert lines[0].startswith(f"ecg-tune sweep: error: {key}: "), lines[0]
    assert not storage.exists(), "a sweep folder was created for an invalid space"


@pytest.mark.parametrize(("name", "changes", "key"), [
    p if hasattr(p, "marks") else pytest.param(*p, id=p[0]) for p in BAD_SPACES])
def test_bad_space_fails_before_anything_starts(name: str, changes: dict, key: str, tmp_path: Path, shards: Path,
                                                 capsys: pytest.CaptureFixture, no_sweep_starts: None) -> None:
    space = _bad_space(tmp_path, shards, changes)
    storage = tmp_path / "sweeps"
    code = main(["sweep", str(space), "--storage", str(storage)])
    _check_refused(code, capsys.readouterr().err, key, storage)
    assert "ray" not in sys.modules or not __import__("ray").is_initialized()


def test_the_guard_below_is_what_the_cli_calls(tmp_path: Path, shards: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`no_sweep_starts` replaces run_sweep; check that a valid space does reach it (so the tests above
    would notice a bad space that is accepted, without running a sweep in the test process)."""
    import ecg_tune.tune.sweep as sweep_module

    monkeypatch.setattr(sweep_module, "run_sweep", _refuse_to_run)
    space = write_yaml(tmp_path / "good.yaml", tiny_doc(shards))
    with pytest.raises(SweepWouldStart):
        main(["sweep", str(space), "--storage", str(tmp_path / "sweeps")])


class SweepWouldStart(AssertionError):
    pass


def _refuse_to_run(*args: Any, **kwargs: Any) -> None:
    raise SweepWouldStart("the space was accepted and the sweep would start now")


@pytest.fixture
def no_sweep_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    import ecg_tune.tune.sweep as sweep_module

    monkeypatch.setattr(sweep_module, "run_sweep", _refuse_to_run)


YAML_TAGS = [
    "!!python/object/apply:os.system ['touch {marker}']",
    "!!python/object/new:pathlib.Path ['{marker}']",
    "!!python/name:os.system",
]


@pytest.mark.parametrize("tag", YAML_TAGS)
def test_yaml_tags_that_construct_objects_are_refused(tag: str, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                      no_sweep_starts: None) -> None:
    marker = tmp_path / "code-ran"
    space = write_yaml(tmp_path / "evil.yaml", f"name: evil\nfixed:\n  optim.lr: {tag.format(marker=marker)}\n")
    code = main(["sweep", str(space), "--storage", str(tmp_path / "sweeps")])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and err[0].startswith(f"ecg-tune sweep: error: {space}: not valid (safe) YAML"), err
    assert "Traceback" not in "\n".join(err)
    assert not marker.exists() and not (tmp_path / "sweeps").exists()


def test_yaml_error_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, no_sweep_starts: None) -> None:
    space = write_yaml(tmp_path / "evil.yaml", "name: evil\nfixed:\n  optim.lr: !!python/name:os.system\n")
    code = main(["sweep", str(space), "--storage", str(tmp_path / "sweeps")])
    _check_refused(code, capsys.readouterr().err, str(space), tmp_path / "sweeps")


def test_missing_dataset_fails_before_anything_starts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "no-such-data"
    space = write_yaml(tmp_path / "space.yaml", tiny_doc(missing))
    storage = tmp_path / "sweeps"
    code = main(["sweep", str(space), "--storage", str(storage)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ecg-tune sweep: error: ")]
    assert code == 2 and len(err) == 1 and f"{missing}: dataset folder does not exist" in err[0]
    assert not (storage / "tiny").exists()  # so that fixing the path and running again just works


def test_bad_space_through_the_installed_command(tmp_path: Path, shards: Path) -> None:
    """The real `ecg-tune sweep` process: exit 2, one line, and Ray never started (no Ray temp folder)."""
    space = _bad_space(tmp_path, shards, {"space": {"method.name": {"branch": {"simclr": {}, "moco": {}}}}})
    ray_tmp = tmp_path / "ray-tmp"
    env = {**ENV, "RAY_TMPDIR": str(ray_tmp)}
    done = subprocess.run([str(Path(sys.executable).parent / "ecg-tune"), "sweep", str(space), "--storage",
                           str(tmp_path / "sweeps")], capture_output=True, text=True, env=env, timeout=120)
    _check_refused(done.returncode, done.stderr, "space.method.name", tmp_path / "sweeps")
    assert "unknown method 'moco'" in done.stderr and done.stdout == ""
    assert not ray_tmp.exists(), "Ray was started"


def _tiny_trainer(**over: Any) -> Any:
    import numpy as np
    import torch

    from ecg_tune.config import TrialConfig
    from ecg_tune.data.store import SignalStore
    from ecg_tune.ssl.train import Trainer

    torch.set_num_threads(1)
    leads = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
    rng = np.random.default_rng(0)
    store = SignalStore.from_signals([rng.normal(0, 0.3, (12, 320)) for _ in range(8)], leads, 100.0)
    cfg = TrialConfig.from_flat({"encoder.name": "xresnet1d50", "encoder.width": 8, "train.batch_size": 4,
                                 "train.epochs": 3, "data.window": 250, **over})
    return Trainer.from_config(cfg, store, np.arange(8), lead_names=leads, device="cpu"), cfg


def newest(paths: list[Path], cfg: Any = None) -> Path | None:
    """The newest valid checkpoint file among `paths` (trainable._newest over the files read)."""
    from ecg_tune.tune.trainable import _newest, _read

    best = _newest([_read(p) for p in paths], cfg)
    return best.path if best is not None else None


def test_corrupt_trial_checkpoint_falls_back_to_the_other_copy(tmp_path: Path) -> None:
    """A trial resumes from the newest *valid* of its own last.ckpt and Ray's copy."""
    trainer, _ = _tiny_trainer()
    trainer.fit(1)
    trainer.save(tmp_path / "ray.ckpt")
    trainer.fit(2)
    trainer.save(tmp_path / "own.ckpt")
    assert newest([tmp_path / "own.ckpt", tmp_path / "ray.ckpt"]) == tmp_path / "own.ckpt"
    data = (tmp_path / "own.ckpt").read_bytes()
    (tmp_path / "own.ckpt").write_bytes(data[: len(data) // 2])  # e.g. a disk that filled up under a copy
    assert newest([tmp_path / "own.ckpt", tmp_path / "ray.ckpt"]) == tmp_path / "ray.ckpt"
    (tmp_path / "ray.ckpt").write_bytes(b"garbage")
    assert newest([tmp_path / "own.ckpt", tmp_path / "ray.ckpt"]) is None  # start over, never crash


def test_a_checkpoint_of_another_config_in_the_trial_folder_is_not_resumed(tmp_path: Path) -> None:
    ours, cfg = _tiny_trainer(**{"optim.lr": 1e-3})
    ours.fit(1)
    ours.save(tmp_path / "ray.ckpt")
    other, _ = _tiny_trainer(**{"optim.lr": 1e-2})  # e.g. a trial folder reused by another config
    other.fit(2)
    other.save(tmp_path / "own.ckpt")
    assert newest([tmp_path / "own.ckpt", tmp_path / "ray.ckpt"], cfg) == tmp_path / "ray.ckpt"


# ================================================================================================ trial worker killed


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_killed_trial_worker_is_retried_from_its_last_checkpoint(tmp_path: Path, shards: Path) -> None:
    space = write_yaml(tmp_path / "space.yaml", tiny_doc(shards, budget={"trials": 2, "max_epochs": 4, "max_concurrent": 2}))
    sweep_dir = tmp_path / "sweeps" / "tiny"
    proc = start("sweep", str(space), "--storage", str(tmp_path / "sweeps"), log=tmp_path / "sweep.log")
    try:
        def victim() -> tuple[str, int] | None:  # a trial with a checkpoint at epoch >= 1 that is still training
            if not (sweep_dir / "trials").is_dir():
                return None
            for trial_id, evs in events(sweep_dir).items():
                folder = sweep_dir / "trials" / trial_id
                probe = folder / "probe.json"
                if (folder / "last.ckpt").is_file() and probe.is_file() and not (folder / "artifacts" / "linear.json").exists():
                    if 1 <= json.loads(probe.read_text())["epoch"] < 3:
                        return trial_id, evs[-1]["pid"]
            return None

        trial_id, pid = wait_for(victim, 400, "a trial past its first checkpoint", proc)
        os.kill(pid, signal.SIGKILL)  # the Ray worker process running train_trial
        code = finish(proc, 500)
    finally:
        kill_group(proc)
    log = (tmp_path / "sweep.log").read_text(errors="replace")
    assert code == 0, log[-4000:]
    starts = [e for e in events(sweep_dir)[trial_id] if e["event"] == "start"]
    assert len(starts) >= 2, starts
    assert starts[1]["epoch"] >= 1 and starts[1]["pid"] != pid, "retried from its checkpoint, in a new process"
    _, trials, parent = trial_runs(sweep_dir)
    assert len(trials) == 2 and parent.info.status == "FINISHED"
    for run in trials:
        assert run.info.status == "FINISHED" and run.data.metrics["epoch"] == 4 and "linear.test_auc" in run.data.metrics


# ================================================================================================ MLflow server restarts


class MlflowServer:
    """`mlflow server` on sqlite in its own process group; stop() kills the whole group (SIGKILL)."""

    def __init__(self, folder: Path, port: int):
        self.folder, self.port, self.proc = folder, port, None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> None:
        import urllib.request

        env = {**ENV, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
             "--artifacts-destination", str(self.folder / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1"],
            env=env, cwd=self.folder, stdout=open(self.folder / "server.log", "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
            start_new_session=True)

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_for(healthy, timeout, "the MLflow server to answer", self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            kill_group(self.proc)
            self.proc.wait(timeout=30)
            self.proc = None


SECRET = "s3cr3t-Pa55w0rd"
DB_SECRET = "db-Pa55w0rd-s3cr3t"
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"}


def _postgres_database(name: str) -> str | None:
    """A fresh database on the local PostgreSQL (trust auth: any password is accepted), or None."""
    try:
        import psycopg2

        conn = psycopg2.connect(**PG, connect_timeout=3)
    except Exception:
        return None
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return f"postgresql+psycopg2://{PG['user']}:{DB_SECRET}@{PG['host']}:{PG['port']}/{name}"


def _drop_database(name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(**PG, connect_timeout=3)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


@pytest.fixture(scope="module")
def sweep_through_restarted_server(tmp_path_factory: pytest.TempPathFactory, shards: Path) -> Iterator[dict[str, Any]]:
    """A 4-trial sweep tracked by an MLflow server that is killed mid-sweep and restarted 8 s later on the
    same port; the tracking URI carries a user and password (the server ignores them), and so does the
    Optuna storage URL when the local PostgreSQL is there (trust auth ignores it)."""
    folder = tmp_path_factory.mktemp("mlflow-restart")
    db_name = f"ecg_tune_faults_{os.getpid()}"
    optuna_url = _postgres_database(db_name)
    (folder / "server").mkdir()
    server = MlflowServer(folder / "server", free_port())
    server.start()
    uri = f"http://ecg-user:{SECRET}@127.0.0.1:{server.port}"
    space = write_yaml(folder / "space.yaml", tiny_doc(shards, budget={"trials": 4, "max_epochs": 3, "max_concurrent": 2}))
    sweep_dir = folder / "sweeps" / "tiny"
    extra = ["--optuna-storage", optuna_url] if optuna_url else []
    proc = start("sweep", str(space), "--storage", str(folder / "sweeps"), "--tracking-uri", uri, *extra,
                 log=folder / "sweep.log")
    outage = {}
    try:
        # Down while trials report: after the first probe result, before the first trial finished.
        wait_for(lambda: list((sweep_dir / "trials").glob("*/probe.json")) if (sweep_dir / "trials").is_dir() else [],
                 400, "the first probe result", proc)
        server.stop()
        outage["down"] = time.time()
        time.sleep(8)
        server.start()
        outage["up"] = time.time()
        code = finish(proc, 500)
        yield {"code": code, "log": (folder / "sweep.log").read_text(errors="replace"), "sweep_dir": sweep_dir,
               "server": server, "folder": folder, "uri": uri, "outage": outage, "optuna": optuna_url}
    finally:
        kill_group(proc)
        server.stop()
        if optuna_url:
            _drop_database(db_name)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_mlflow_server_restart_mid_sweep_loses_nothing(sweep_through_restarted_server: dict[str, Any]) -> None:
    run = sweep_through_restarted_server
    assert run["code"] == 0, run["log"][-4000:]
    finished_trials = list((run["sweep_dir"] / "trials").glob("*/artifacts/linear.json"))
    assert len(finished_trials) == 4
    client, trials, parent = trial_runs(run["sweep_dir"], tracking_uri=run["server"].url)
    assert parent.info.status == "FINISHED"
    assert len(trials) == 4, "exactly one run per trial"
    down, up = run["outage"]["down"] * 1000, run["outage"]["up"] * 1000
    during = [m for r in trials for m in client.get_metric_history(r.info.run_id, "loss") if down <= m.timestamp <= up]
    assert during, "no trial reported while the server was down: the outage missed the sweep"
    for r in trials:
        assert r.info.status == "FINISHED", r.info
        assert {"optim.lr", "encoder.width", "method.name", "seed"} <= set(r.data.params)
        for metric in ("probe_auc", "loss", "epoch"):
            steps = sorted(m.step for m in client.get_metric_history(r.info.run_id, metric))
            assert steps == [1, 2, 3], f"{r.data.tags['ecg_tune.trial_id']}: {metric} history {steps}"
        assert {"linear.test_auc", "linear.test_ci_low", "linear.test_ci_high"} <= set(r.data.metrics)
        names = {a.path for a in client.list_artifacts(r.info.run_id, "results")}
        assert {"results/encoder.ckpt", "results/linear.json"} <= names


def _leaks(run: dict[str, Any], secret: str) -> list[str]:
    return [str(p.relative_to(run["folder"])) for p in run["folder"].rglob("*")
            if p.is_file() and p.suffix != ".log" and secret.encode() in p.read_bytes()]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_tracking_uri_password_is_never_written_or_printed(sweep_through_restarted_server: dict[str, Any]) -> None:
    run = sweep_through_restarted_server
    assert run["code"] == 0, run["log"][-4000:]
    assert SECRET not in run["log"], "printed"
    assert _leaks(run, SECRET) == [], "the password is stored in a file"
    _, trials, parent = trial_runs(run["sweep_dir"], tracking_uri=run["server"].url)
    for r in [*trials, parent]:
        assert SECRET not in json.dumps({**r.data.params, **r.data.tags})


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_optuna_storage_password_is_never_written_or_printed(sweep_through_restarted_server: dict[str, Any]) -> None:
    run = sweep_through_restarted_server
    if not run["optuna"]:
        pytest.skip("no local PostgreSQL on 127.0.0.1:5432")
    assert run["code"] == 0, run["log"][-4000:]
    assert DB_SECRET not in run["log"], "printed"
    assert _leaks(run, DB_SECRET) == [], "the password is stored in a file"
