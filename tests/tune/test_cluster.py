"""Sweeps on real multi-process clusters: Ray nodes, an MLflow server on PostgreSQL, Optuna on PostgreSQL.

Nothing is mocked. Every test starts its own processes, each in its own session (`start_new_session`),
and stops exactly those: every live process whose session id is one it started is SIGKILLed (Ray's
workers put themselves in their own process groups but stay in the node's session, so killing a
process group alone would leave them behind). Ray nodes run with token authentication on, with a
per-test `--temp-dir` under /tmp and free ports (Redis owns 6379 on the project's machines), and
with 1 CPU and a 0.5 GB object store each so that two nodes fit on a 2-core box. The worker node
takes the address 127.0.0.2 (any 127/8 address is loopback on Linux), so Ray's `node_ip` in each
trial result tells the two nodes apart.

PostgreSQL (127.0.0.1:5432, trust auth for `postgres`; override with ECG_TUNE_TEST_PG*) is used
through cluster/mlflow/create-db.sh, with fresh databases per test that are dropped afterwards.
The Slurm test replaces only Slurm's own `srun`/`scontrol` with stand-ins that run the command on
this machine; the Ray nodes, the driver and the sweep they start are real.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

pytestmark = [
    pytest.mark.slow,
    pytest.mark.cluster,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and the 127.0.0.0/8 loopback range"),
]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")
ECG_TUNE = [str(BIN / "ecg-tune")] if (BIN / "ecg-tune").exists() else [sys.executable, "-m", "ecg_tune.cli"]
MLFLOW_SERVER_SH = REPO / "cluster" / "mlflow" / "mlflow-server.sh"
CREATE_DB_SH = REPO / "cluster" / "mlflow" / "create-db.sh"
WORKER_IP = "127.0.0.2"
PG_HOST = os.environ.get("ECG_TUNE_TEST_PGHOST", "127.0.0.1")
PG_PORT = os.environ.get("ECG_TUNE_TEST_PGPORT", "5432")
PG_SUPERUSER = os.environ.get("ECG_TUNE_TEST_PGUSER", "postgres")


# ------------------------------------------------------------------------------------------------
# Processes


def base_env(**extra: str) -> dict[str, str]:
    """This process's environment without any RAY_*/MLFLOW_* setting of the caller's shell, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_", "PG"))}
    env.update(PYTHONUNBUFFERED="1", RAY_DEDUP_LOGS="0", RAY_USAGE_STATS_ENABLED="0")
    env.update(extra)
    return env


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgid, sid) of a process, None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1]), int(fields[2]), int(fields[3])


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of session `sid`."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st and st[3] == sid and st[0] != "Z":
                out.append(int(entry))
    return out


def kill_session(sid: int, timeout_s: float = 30.0) -> None:
    """SIGKILL every live process of session `sid` (one we started) until none is left."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = session_members(sid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    raise RuntimeError(f"processes of session {sid} survived SIGKILL: {session_members(sid)}")


class Started:
    """A command started in its own session, output to a file; `stop()` kills its whole session."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, cwd: Path | None = None):
        self.log = log
        self._out = open(log, "w")
        self.proc = subprocess.Popen(args, env=env, stdout=self._out, stderr=subprocess.STDOUT, cwd=cwd,
                                     start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, n: int = 4000) -> str:
        return self.output()[-n:]

    def wait(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"{self.proc.args[:3]} did not finish in {timeout_s:.0f} s:\n{self.tail()}")
            raise

    def stop(self) -> None:
        kill_session(self.pid)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        self._out.close()


def run_cli(args: list[str], env: dict[str, str], log: Path, timeout_s: float) -> tuple[int, str]:
    proc = Started([*ECG_TUNE, *args], env, log)
    try:
        rc = proc.wait(timeout_s)
    finally:
        proc.stop()  # also the local Ray instance and workers a driver may leave behind
    return rc, proc.output()


def wait_until(predicate, timeout_s: float, what: str, interval_s: float = 0.3):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")


# ------------------------------------------------------------------------------------------------
# Ray nodes


class RayNode(Started):
    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path):
        super().__init__([RAY, "start", "--block", *args], env, log_dir / f"ray-{name}.log")
        self.name = name

    def wait_started(self, timeout_s: float = 180) -> None:
        def started() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(f"ray node {self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            return "Ray runtime started" in self.output()

        wait_until(started, timeout_s, f"ray node {self.name} to start")

    def raylet_pid(self) -> int | None:
        return next((p for p in session_members(self.pid) if _comm(p) == "raylet"), None)


@dataclass
class LocalRayCluster:
    """A head and a worker node, each a `ray start --block` process of its own, with token auth."""

    work: Path
    temp_dir: Path
    port: int
    env: dict[str, str]
    token: str
    head: RayNode | None = None
    worker: RayNode | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _common(self) -> list[str]:
        agent = free_ports(4)
        return ["--num-cpus=1", f"--temp-dir={self.temp_dir}", f"--object-store-memory={500 * 2**20}",
                "--disable-usage-stats", f"--dashboard-agent-listen-port={agent[0]}",
                f"--dashboard-agent-grpc-port={agent[1]}", f"--metrics-export-port={agent[2]}",
                f"--runtime-env-agent-port={agent[3]}"]

    def start_head(self) -> None:
        # `ray start --head` records its address in /tmp/ray/ray_current_cluster, where `--address auto`
        # of anyone else on this machine would find it: put back what was there.
        current = Path("/tmp/ray/ray_current_cluster")
        previous = current.read_text() if current.is_file() else None
        self.head = RayNode("head", ["--head", f"--port={self.port}", "--include-dashboard=false",
                                     '--resources={"head": 1, "ecg_slot": 1}', *self._common()], self.env, self.work)
        self.head.wait_started()
        if previous is not None:
            current.write_text(previous)

    def start_worker(self) -> None:
        # A declared GPU that is not there: Ray schedules by declared resources; torch then runs on CPU.
        self.worker = RayNode("worker", [f"--address={self.address}", f"--node-ip-address={WORKER_IP}", "--num-gpus=1",
                                         '--resources={"worker_node": 1, "ecg_slot": 1}', *self._common()],
                              self.env, self.work)
        self.worker.wait_started()

    def ensure_worker(self) -> None:
        if self.worker is None or self.worker.raylet_pid() is None:
            if self.worker is not None:
                self.worker.stop()
            self.start_worker()
        wait_until(lambda: self.active_nodes() == 2, 90, "2 active Ray nodes")

    def active_nodes(self) -> int:
        out = subprocess.run([RAY, "status", f"--address={self.address}"], env=self.env, capture_output=True,
                             text=True, timeout=60).stdout
        if "Active:" not in out:
            return -1
        block = out.split("Active:", 1)[1].split("Pending:", 1)[0]
        return sum(1 for line in block.splitlines() if line.strip().startswith("1 node_"))

    def stop(self) -> None:
        for node in (self.worker, self.head):
            if node is not None:
                node.stop()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRayCluster]:
    token = secrets.token_hex(32)
    env = base_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    # Short: Ray puts unix sockets below it (108-byte path limit).
    cluster = LocalRayCluster(work=tmp_path_factory.mktemp("ray-cluster"), temp_dir=Path(f"/tmp/ray-{secrets.token_hex(3)}"),
                              port=free_ports(1)[0], env=env, token=token)
    try:
        cluster.start_head()
        cluster.ensure_worker()
        yield cluster
    finally:
        cluster.stop()


# ------------------------------------------------------------------------------------------------
# Data, spaces, results


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ecg_tune.data.synthetic import write_synthetic

    out = tmp_path_factory.mktemp("synthetic-cluster") / "data"
    write_synthetic(out, n_records=240, seed=0)
    return out


def tiny_space(tmp: Path, shards: Path, name: str, **over: object) -> Path:
    doc = {
        "name": name,
        "data": {"pretrain": [str(shards)], "downstream": str(shards)},
        "objective": {"metric": "probe_auc", "mode": "max"},
        "budget": {"trials": 2, "max_epochs": 2, "grace_period": 1, "max_concurrent": 2},
        "resources": {"cpu": 1},
        "scheduler": "fifo",
        "searcher": {"sampler": "tpe", "seed": 0, "n_startup_trials": 2},
        "fixed": {
            "encoder.name": "xresnet1d50", "encoder.width": 8, "train.batch_size": 32, "train.steps_per_epoch": 3,
            "evaluation.probe_epochs": 3, "evaluation.protocols": "linear", "evaluation.linear_epochs": 1,
            "evaluation.bootstrap": 20,
        },
        "space": {
            "method.name": {"branch": {"simclr": {"method.temperature": {"float": [0.1, 1.0], "log": True}},
                                       "byol": {"method.tau0": {"float": [0.99, 0.999]}}}},
            "optim.lr": {"float": [1e-4, 1e-2], "log": True},
        },
    }
    doc.update(over)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def trial_results(sweep_dir: Path) -> dict[str, list[dict]]:
    """Ray's per-trial result rows (`<sweep>/trial_<id>/result.json`), which carry node_ip, pid, epoch."""
    out: dict[str, list[dict]] = {}
    for path in sweep_dir.glob("trial_*/result.json"):
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written
                break
        if rows:
            out[rows[0]["trial_id"]] = rows
    return out


def trial_configs(sweep_dir: Path) -> dict[str, dict]:
    out = {}
    for path in sweep_dir.glob("trial_*/params.json"):
        out[path.parent.name.removeprefix("trial_")] = json.loads(path.read_text())
    return out


def start_events(sweep_dir: Path, trial_id: str) -> list[dict]:
    path = sweep_dir / "trials" / trial_id / "events.jsonl"
    if not path.exists():
        return []
    return [e for e in map(json.loads, path.read_text().splitlines()) if e["event"] == "start"]


def assert_secret_absent(secret: str, *roots: Path) -> None:
    """No file below `roots` (logs, sweep folders, Ray's session dirs) contains `secret`."""
    needle = secret.encode()
    for root in roots:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
        for path in files:
            try:
                if path.stat().st_size < 50 * 2**20 and needle in path.read_bytes():
                    pytest.fail(f"secret found in {path}")
            except OSError:
                continue


# ------------------------------------------------------------------------------------------------
# PostgreSQL


@dataclass
class PgDatabases:
    role: str
    password: str
    mlflow: str
    mlflow_auth: str
    optuna: str

    def url(self, db: str) -> str:
        # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; the project ships psycopg2.
        return f"postgresql+psycopg2://{self.role}@{PG_HOST}:{PG_PORT}/{db}"


def _psql(sql: str) -> subprocess.CompletedProcess:
    return subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", PG_HOST, "-p", PG_PORT, "-U", PG_SUPERUSER,
                           "-d", "postgres", "-c", sql], capture_output=True, text=True, timeout=60)


@pytest.fixture
def pg() -> Iterator[PgDatabases]:
    if shutil.which("psql") is None:
        pytest.skip("psql is not installed")
    probe = _psql("SELECT 1")
    if probe.returncode != 0:
        pytest.skip(f"PostgreSQL at {PG_HOST}:{PG_PORT} is not reachable as {PG_SUPERUSER}: {probe.stderr.strip()}")
    tag = f"ecgt_{secrets.token_hex(4)}"
    dbs = PgDatabases(role=tag, password=secrets.token_urlsafe(16), mlflow=f"{tag}_mlflow",
                      mlflow_auth=f"{tag}_mlflow_auth", optuna=f"{tag}_optuna")
    env = {**os.environ, "PGHOST": PG_HOST, "PGPORT": PG_PORT, "PGUSER": PG_SUPERUSER, "ECG_TUNE_DB_PASSWORD": dbs.password,
           "ECG_TUNE_DB_USER": dbs.role, "MLFLOW_DB": dbs.mlflow, "MLFLOW_AUTH_DB": dbs.mlflow_auth, "OPTUNA_DB": dbs.optuna}
    made = subprocess.run(["bash", str(CREATE_DB_SH)], env=env, capture_output=True, text=True, timeout=120)
    try:
        assert made.returncode == 0, made.stderr
        yield dbs
    finally:
        for db in (dbs.mlflow, dbs.mlflow_auth, dbs.optuna):
            _psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        _psql(f'DROP ROLE IF EXISTS "{dbs.role}"')


# ------------------------------------------------------------------------------------------------
# Ray cluster tests (these two share one cluster; the second kills the worker node, and the first
# restarts it if it runs after)


@pytest.mark.timeout(420)
def test_fractional_gpu_trials_are_packed_on_the_node_that_declares_the_gpu(
    ray_cluster: LocalRayCluster, shards: Path, tmp_path: Path
) -> None:
    ray_cluster.ensure_worker()
    # Datasets given as URIs (file:// here; s3:// works the same through pyarrow) reach every node.
    uri = shards.resolve().as_uri()
    # 12 epochs (~4 s): the overlap must outlast the second actor's start-up and show through Ray's
    # whole-second result timestamps
    space = tiny_space(tmp_path, shards, "gpu", budget={"trials": 2, "max_epochs": 12, "max_concurrent": 2},
                       resources={"cpu": 0.5, "gpu": 0.5}, data={"pretrain": [uri], "downstream": uri})
    rc, out = run_cli(["sweep", str(space), "--storage", str(tmp_path / "sweeps"), "--address", ray_cluster.address],
                      ray_cluster.env, tmp_path / "sweep.log", timeout_s=360)
    assert rc == 0, out[-4000:]
    sweep_dir = tmp_path / "sweeps" / "gpu"
    results = trial_results(sweep_dir)
    assert len(results) == 2
    # Only the worker declares a GPU: both trials ran there although the head had a free CPU.
    for rows in results.values():
        assert {r["node_ip"] for r in rows} == {WORKER_IP}
    # ...and at the same time, 0.5 GPU each on its single GPU.
    spans = []
    for trial_id, rows in results.items():
        events = start_events(sweep_dir, trial_id)
        assert len(events) == 1
        spans.append((events[0]["time"], rows[-1]["timestamp"]))
    assert max(s for s, _ in spans) < min(e for _, e in spans), f"trials did not overlap: {spans}"
    assert_secret_absent(ray_cluster.token, tmp_path, ray_cluster.temp_dir)


@pytest.mark.timeout(600)
def test_sweep_spans_both_nodes_and_a_lost_node_s_trial_resumes_on_the_other(
    ray_cluster: LocalRayCluster, shards: Path, tmp_path: Path
) -> None:
    ray_cluster.ensure_worker()
    epochs = 5
    # cpu 0.5 would let both trials pack on one node; the custom resource `ecg_slot` (1 per node)
    # is what spreads them, one per node.
    space = tiny_space(tmp_path, shards, "span", budget={"trials": 2, "max_epochs": epochs, "max_concurrent": 2},
                       resources={"cpu": 0.5, "custom": {"ecg_slot": 1}})
    sweep_dir = tmp_path / "sweeps" / "span"
    driver = Started([*ECG_TUNE, "sweep", str(space), "--storage", str(tmp_path / "sweeps"), "--address",
                      ray_cluster.address], ray_cluster.env, tmp_path / "sweep.log")
    try:
        def victim_mid_run() -> str | None:
            if driver.proc.poll() is not None:
                pytest.fail(f"the sweep ended before the worker node could be killed:\n{driver.tail()}")
            for trial_id, rows in trial_results(sweep_dir).items():
                last = rows[-1]
                if last["node_ip"] == WORKER_IP and 1 <= last["epoch"] < epochs - 1 and not last.get("done"):
                    return trial_id
            return None

        victim = wait_until(victim_mid_run, 300, "a trial mid-way on the worker node", interval_s=0.2)
        raylet = ray_cluster.worker.raylet_pid()
        assert raylet is not None
        os.kill(raylet, signal.SIGKILL)  # the node dies; its trial's worker process goes with it
        killed_at = time.time()
        rc = driver.wait(480)
    finally:
        driver.stop()
    out = driver.output()
    assert rc == 0, out[-4000:]

    results = trial_results(sweep_dir)
    assert len(results) == 2
    first_ips = {rows[0]["node_ip"] for rows in results.values()}
    assert WORKER_IP in first_ips and len(first_ips) == 2, f"trials did not start on both nodes: {first_ips}"
    head_ip = (first_ips - {WORKER_IP}).pop()
    for trial_id, rows in results.items():
        assert max(r["epoch"] for r in rows) == epochs, f"{trial_id} did not finish"
    # The lost node's trial was retried on the head, from its checkpoint, not from scratch.
    starts = start_events(sweep_dir, victim)
    assert len(starts) >= 2, starts
    assert starts[-1]["epoch"] >= 1, f"retried trial restarted from epoch {starts[-1]['epoch']}"
    assert starts[-1]["pid"] != starts[0]["pid"]
    # The retried process reports from the head only. (Not "every row after the kill": the trial's
    # worker process may outlive its raylet by a moment and report one more epoch from the lost node.)
    after = [r for r in results[victim] if r["pid"] == starts[-1]["pid"]]
    assert after and {r["node_ip"] for r in after} == {head_ip}
    assert all(r["timestamp"] >= int(killed_at) for r in after)
    epochs_seen = [r["epoch"] for r in results[victim]]
    assert sorted(set(epochs_seen)) == list(range(1, epochs + 1))
    # The other trial was never interrupted.
    (other,) = set(results) - {victim}
    assert len(start_events(sweep_dir, other)) == 1
    # The killed node is gone from the cluster; the head is still serving.
    assert wait_until(lambda: ray_cluster.active_nodes() == 1, 90, "the dead node to leave the cluster")
    # MLflow (sqlite in the sweep folder): one finished run per trial, despite the retry.
    from mlflow.tracking import MlflowClient

    settings = json.loads((sweep_dir / "ecg_tune_sweep.json").read_text())
    runs = MlflowClient(settings["tracking_uri"]).search_runs([settings["experiment_id"]])
    trials = [r for r in runs if r.data.tags.get("ecg_tune.role") == "trial"]
    assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials)
    assert_secret_absent(ray_cluster.token, tmp_path, ray_cluster.temp_dir)


def test_unreachable_or_malformed_address_fails_fast_with_one_line(tmp_path: Path, shards: Path) -> None:
    from ecg_tune.errors import ConfigError
    from ecg_tune.tune.sweep import _init_ray

    for bad in ("nohostport", "host:", "host:99999", "ray://head:10001"):
        with pytest.raises(ConfigError, match="--address"):
            _init_ray(bad, None)  # refused before Ray is touched
    port = free_ports(1)[0]  # nothing listens there
    space = tiny_space(tmp_path, shards, "noray")
    started = time.monotonic()
    rc, out = run_cli(["sweep", str(space), "--storage", str(tmp_path / "sweeps"), "--address", f"127.0.0.1:{port}"],
                      base_env(RAY_AUTH_MODE="disabled"), tmp_path / "noray.log", timeout_s=120)
    assert rc != 0 and "cannot reach the Ray head" in out, out[-2000:]
    assert "Traceback" not in out
    assert time.monotonic() - started < 90  # Ray's own client would retry for minutes


# ------------------------------------------------------------------------------------------------
# The Slurm recipe, with `srun`/`scontrol` shims: both "nodes" are this machine


SLURM_SHIMS = {
    "scontrol": """#!/bin/bash
[[ "$1 $2" == "show hostnames" ]] && { tr ',' '\\n' <<<"$3"; exit 0; }
echo "scontrol shim: unsupported: $*" >&2; exit 1
""",
    "srun": """#!/bin/bash
while [[ $# -gt 0 ]]; do
  case "$1" in -w|--nodelist|-N|-n) shift 2 ;; -*) shift ;; *) break ;; esac
done
exec "$@"
""",
}


@pytest.mark.timeout(480)
def test_slurm_recipe_starts_head_and_worker_runs_the_sweep_and_cleans_up(shards: Path, tmp_path: Path) -> None:
    shims = tmp_path / "bin"
    shims.mkdir()
    for name, text in SLURM_SHIMS.items():
        (shims / name).write_text(text)
        (shims / name).chmod(0o755)
    job_id = str(900000 + secrets.randbelow(99999))
    shared = tmp_path / "shared"
    space = tiny_space(tmp_path, shards, "slurm", budget={"trials": 2, "max_epochs": 1, "max_concurrent": 2})
    env = base_env(
        PATH=f"{shims}:{os.environ['PATH']}", SLURM_JOB_ID=job_id, SLURM_JOB_NODELIST="sim-head,sim-worker",
        SLURM_GPUS_PER_NODE="0", SLURM_CPUS_PER_TASK="1", ECG_TUNE_VENV=str(Path(sys.executable).parent.parent),
        SHARED=str(shared), RAY_PORT=str(free_ports(1)[0]), TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
        OPTUNA_STORAGE=f"sqlite:///{tmp_path / 'optuna.db'}",
    )
    job = Started(["bash", str(REPO / "cluster" / "slurm" / "ecg-tune-sweep.sbatch"), str(space)], env,
                  tmp_path / "slurm.log")
    try:
        rc = job.wait(420)
        out = job.output()
        assert rc == 0, out[-4000:]
        assert "Ray cluster: 2/2 nodes" in out
        # The trap stopped every Ray process of the job (nothing of its session is left) ...
        wait_until(lambda: not session_members(job.pid), 30, "the job's Ray processes to exit")
    finally:
        job.stop()
    # ... and removed the per-job temp dir and the token.
    assert not Path(f"/tmp/ray-{job_id}").exists()
    assert not (shared / ".ray-jobs" / job_id).exists()
    results = trial_results(shared / "sweeps" / "slurm")
    assert len(results) == 2 and all(rows[-1]["epoch"] == 1 for rows in results.values())


# ------------------------------------------------------------------------------------------------
# MLflow server on PostgreSQL


def _http_status(url: str, user: str | None = None, password: str | None = None) -> int:
    request = urllib.request.Request(url)
    if user is not None:
        request.add_header("Authorization", "Basic " + b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


@pytest.mark.timeout(480)
def test_sweep_logs_over_http_to_an_mlflow_server_backed_by_postgresql(
    pg: PgDatabases, shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg2
    from mlflow.tracking import MlflowClient

    auth = importlib.util.find_spec("flask_wtf") is not None  # the mlflow[auth] extra
    if not auth:
        import warnings

        warnings.warn("mlflow[auth] (Flask-WTF) is not installed: testing the MLflow server without basic auth", stacklevel=1)
    port = free_ports(1)[0]
    url = f"http://127.0.0.1:{port}"
    admin_password = secrets.token_urlsafe(18)
    artifacts = tmp_path / "mlflow-artifacts"
    server = Started(["bash", str(MLFLOW_SERVER_SH)], base_env(
        MLFLOW_BIN=str(BIN / "mlflow"), MLFLOW_BACKEND_STORE_URI=pg.url(pg.mlflow),
        MLFLOW_AUTH_DATABASE_URI=pg.url(pg.mlflow_auth), MLFLOW_ARTIFACTS_DESTINATION=str(artifacts),
        MLFLOW_HOST="127.0.0.1", MLFLOW_PORT=str(port), MLFLOW_WORKERS="1", MLFLOW_AUTH="basic" if auth else "none",
        MLFLOW_AUTH_ADMIN_PASSWORD=admin_password, PGPASSWORD=pg.password,
    ), tmp_path / "mlflow-server.log")
    try:
        def healthy() -> bool:
            if server.proc.poll() is not None:
                pytest.fail(f"mlflow server exited:\n{server.tail()}")
            return _http_status(f"{url}/health") == 200

        wait_until(healthy, 180, "the MLflow server", interval_s=0.5)
        search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
        if auth:
            assert _http_status(search) == 401
            assert _http_status(search, "admin", "wrong-password") == 401
            assert _http_status(search, "admin", admin_password) == 200

        client_env = base_env(RAY_AUTH_MODE="disabled")
        sweeper_password = secrets.token_urlsafe(18)
        if auth:
            # The sweep runs as a service account without admin rights (default permission READ;
            # what it creates it manages), as cluster/README.md recommends.
            from mlflow.server import get_app_client

            monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
            monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin_password)
            get_app_client("basic-auth", tracking_uri=url).create_user("ecg-tune-sweeper", sweeper_password)
            assert _http_status(search, "ecg-tune-sweeper", sweeper_password) == 200
            client_env.update(MLFLOW_TRACKING_USERNAME="ecg-tune-sweeper", MLFLOW_TRACKING_PASSWORD=sweeper_password)
        space = tiny_space(tmp_path, shards, "mlf")
        rc, out = run_cli(["sweep", str(space), "--storage", str(tmp_path / "sweeps"), "--tracking-uri", url], client_env,
                          tmp_path / "sweep.log", timeout_s=360)
        assert rc == 0, out[-4000:]

        # Read back through the server (as admin).
        client = MlflowClient(url)
        experiment = client.get_experiment_by_name("mlf")
        assert experiment is not None and experiment.artifact_location.startswith("mlflow-artifacts:")
        runs = client.search_runs([experiment.experiment_id])
        trials = [r for r in runs if r.data.tags.get("ecg_tune.role") == "trial"]
        (parent,) = [r for r in runs if r.data.tags.get("ecg_tune.role") == "sweep"]
        assert parent.info.status == "FINISHED"
        assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials)
        for run in trials:
            assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
            assert run.data.params["encoder.width"] == "8" and "optim.lr" in run.data.params
            assert 0.0 <= run.data.metrics["probe_auc"] <= 1.0 and "linear.test_auc" in run.data.metrics
            names = {a.path for a in client.list_artifacts(run.info.run_id, "results")}
            assert "results/encoder.ckpt" in names
            # proxied artifacts land in the server's --artifacts-destination
            assert list(artifacts.rglob(f"{run.info.run_id}/artifacts/results/encoder.ckpt"))

        # The same records, straight from PostgreSQL.
        conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=pg.role, dbname=pg.mlflow)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT run_uuid, status FROM runs WHERE experiment_id = %s", (int(experiment.experiment_id),))
                assert dict(cur.fetchall()) == {r.info.run_id: r.info.status for r in runs}
                for run in trials:
                    cur.execute("SELECT key, value FROM params WHERE run_uuid = %s", (run.info.run_id,))
                    assert dict(cur.fetchall()) == run.data.params
                    cur.execute("SELECT step, value FROM metrics WHERE run_uuid = %s AND key = 'probe_auc' ORDER BY step",
                                (run.info.run_id,))
                    history = client.get_metric_history(run.info.run_id, "probe_auc")
                    assert cur.fetchall() == sorted((h.step, h.value) for h in history)
                    assert [s for s, _ in sorted((h.step, h.value) for h in history)] == [1, 2]
                    cur.execute("SELECT key, value FROM latest_metrics WHERE run_uuid = %s", (run.info.run_id,))
                    latest = dict(cur.fetchall())
                    assert latest["linear.test_auc"] == pytest.approx(run.data.metrics["linear.test_auc"])
                cur.execute("SELECT name, version FROM model_versions")
                assert ("mlf-encoder", 1) in cur.fetchall()
        finally:
            conn.close()
        for secret in (admin_password, sweeper_password, pg.password):
            assert_secret_absent(secret, tmp_path / "sweep.log", tmp_path / "mlflow-server.log", tmp_path / "sweeps")
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------------
# Optuna study on PostgreSQL


@pytest.mark.timeout(600)
def test_optuna_study_on_postgresql_survives_a_driver_kill_and_resume(pg: PgDatabases, shards: Path, tmp_path: Path) -> None:
    import optuna

    storage = pg.url(pg.optuna)
    n_trials, epochs = 4, 3
    space = tiny_space(tmp_path, shards, "opt", budget={"trials": n_trials, "max_epochs": epochs, "max_concurrent": 2})
    sweep_dir = tmp_path / "sweeps" / "opt"
    env = base_env(RAY_AUTH_MODE="disabled")
    driver = Started([*ECG_TUNE, "sweep", str(space), "--storage", str(tmp_path / "sweeps"), "--optuna-storage", storage],
                     env, tmp_path / "sweep.log")
    try:
        def one_done_one_midway() -> bool:
            if driver.proc.poll() is not None:
                pytest.fail(f"the sweep ended before it could be killed:\n{driver.tail()}")
            done = list(sweep_dir.glob("trials/*/artifacts/linear.json"))
            probes = [json.loads(p.read_text() or "{}") for p in sweep_dir.glob("trials/*/probe.json")] if done else []
            return bool(done) and any(1 <= p.get("epoch", 0) < epochs for p in probes)

        wait_until(one_done_one_midway, 400, "one finished and one half-way trial", interval_s=0.3)
        os.killpg(driver.pid, signal.SIGKILL)  # the driver's process group: driver, GCS, raylet
    finally:
        driver.stop()  # then whatever else of its session (Ray workers) is left
    study_name = "opt"
    before = optuna.load_study(study_name=study_name, storage=storage).trials
    assert before and any(t.state == optuna.trial.TrialState.RUNNING for t in before)

    rc, out = run_cli(["resume", str(sweep_dir)], env, tmp_path / "resume.log", timeout_s=480)
    assert rc == 0, out[-4000:]

    study = optuna.load_study(study_name=study_name, storage=storage)
    configs = trial_configs(sweep_dir)
    results = trial_results(sweep_dir)
    assert len(configs) == n_trials and len(results) == n_trials
    states = [(t.number, t.state.name) for t in study.trials]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == n_trials, states
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    # Nothing is left looking alive: a trial asked for just before the kill and never run is not RUNNING.
    stale = [t.number for t in study.trials if t.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)]
    assert not stale, f"Optuna trials left RUNNING after resume: {states}"
    # Exactly one finished Optuna trial per Ray trial, with that trial's sampled values...
    matched = {}
    for trial_id, config in configs.items():
        matches = [t for t in complete if all(config.get(k) == v for k, v in t.params.items())]
        assert len(matches) == 1, f"{trial_id}: {len(matches)} Optuna trials with its parameters"
        assert sorted(matches[0].intermediate_values) == list(range(1, epochs + 1))
        matched[trial_id] = matches[0]
    # ...and Ray's final result of every trial is its full-budget result, the value Optuna was told.
    for trial_id, ot_trial in matched.items():
        final = results[trial_id][-1]
        assert final["epoch"] == epochs and final.get("budget_complete") == 1.0, (
            f"{trial_id}: Ray's last result is from epoch {final['epoch']} (finished before the kill, rerun after it?)")
        assert ot_trial.value == pytest.approx(final["probe_auc"])
