"""MLflow tracking for sweeps: one parent run per sweep, one nested run per trial.

Replaces Ray's stock MLflowLoggerCallback, whose defects the platform must not inherit (platform
notes §0, §3.15-16): it logged one request per metric on the driver's critical path, kept the
trial → run map only in memory (a resumed trial got a second run and the first stayed RUNNING), and
never ended the runs of early-stopped trials. Here:

- metrics go through a queue drained by a background thread with `log_batch` (one request per
  result), off the driver's critical path;
- the trial → run map is part of the callback's state (`get_state`/`set_state`, saved in Ray's
  experiment snapshots) and, as a fallback, runs are found again by their `ecg_tune.trial_id` tag;
- every run ends: FINISHED, FAILED (with the reason) or KILLED, also for early-stopped trials;
- a tracking failure never kills the sweep: a transient one (server unreachable, restarting, 5xx,
  429) keeps the operation and retries it with backoff; a permanent one (MLflow refused the request:
  a deleted run, a rejected value) is reported and dropped, so it never blocks other trials' logging;
- the driver never waits for MLflow: run creation is queued like every other operation;
- a finished trial's encoder is an MLflow 3 LoggedModel of its run, with the final metrics linked.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from ecg_tune.config import TrialConfig
from ecg_tune.tune.spaces import trial_config, unwrap

log = logging.getLogger(__name__)

SWEEP_TAG = "ecg_tune.sweep"
TRIAL_TAG = "ecg_tune.trial_id"
ROLE_TAG = "ecg_tune.role"
# MLflow 3's experiment type (its UI reads the tag; values: genai_development, custom_model_development)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING = "custom_model_development"
# Result keys Ray adds that are not metrics of ours.
_RAY_KEYS = {
    "done", "training_iteration", "time_this_iter_s", "time_total_s", "timestamp", "pid", "time_since_restore",
    "iterations_since_restore", "timesteps_total", "episodes_total", "timesteps_since_restore", "date",
    "hostname", "node_ip", "experiment_tag", "trial_id", "checkpoint_dir_name", "should_checkpoint",
}
MAX_PARAM_LENGTH = 6000


def numeric_metrics(result: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in result.items():
        if key in _RAY_KEYS or key == "config" or key.startswith("config/") or isinstance(value, bool):
            continue
        if isinstance(value, int | float) and math.isfinite(float(value)):
            out[key] = float(value)
    return out


def params_of(config: dict[str, Any]) -> list[Param]:
    return [Param(str(k)[:250], str(v)[:MAX_PARAM_LENGTH]) for k, v in sorted(config.items())]


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None = None) -> str:
    """The sweep's experiment, marked as model training (`mlflow.experimentKind`) so that MLflow's UI
    shows its training runs, not the GenAI overview."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        exp_id = client.create_experiment(name, artifact_location=artifact_location, tags={EXPERIMENT_KIND_TAG: TRAINING})
    else:
        exp_id = exp.experiment_id
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp_id)
        if exp.tags.get(EXPERIMENT_KIND_TAG) != TRAINING:
            client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, TRAINING)
    return exp_id


def find_runs(client: MlflowClient, experiment_id: str, **tags: str) -> list[Any]:
    clauses = " and ".join(f"tags.`{k.replace('__', '.')}` = '{_quote(v)}'" for k, v in tags.items())
    return client.search_runs([experiment_id], filter_string=clauses, max_results=1000)


def _quote(value: str) -> str:
    """Escape a value for an MLflow filter string (single quotes are doubled)."""
    return str(value).replace("'", "''")


def is_permanent(exc: BaseException) -> bool:
    """A failure that retrying cannot fix: MLflow refused the request itself (4xx: a deleted or unknown
    run, a rejected param value, no permission). Connection errors, 5xx, 429 (rate limit) and 408 are
    transient; so is anything that is not an MLflow answer (a locked sqlite file, a timeout)."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, _NoRun):
        return True
    if not isinstance(exc, MlflowException):
        return False
    try:
        status = int(exc.get_http_status_code())
    except Exception:
        return False
    return 400 <= status < 500 and status not in (408, 429)


class _Op:
    """One tracking operation: what it does and, for reports, what it is about."""

    __slots__ = ("fn", "what")

    def __init__(self, fn: Callable[[MlflowClient], Any], what: str):
        self.fn, self.what = fn, what


class _Retrying:
    """Runs tracking operations in order on a background thread.

    A transient failure (server down or restarting, 5xx, 429, a locked database) keeps the operation
    at the head of the queue and retries it with backoff: the order of a run's operations matters and
    the next ones would fail the same way. A permanent failure (MLflow refused the request: a deleted
    run, a rejected value) is reported once and the operation dropped, so it never blocks the others.
    """

    def __init__(self, client_factory: Callable[[], MlflowClient], *, backoff_s: float = 2.0):
        self._client_factory = client_factory
        self._queue: queue.Queue[_Op | None] = queue.Queue()
        self._pending: list[_Op] = []
        self._backoff_s = backoff_s
        self.failures = 0  # transient failures (each retried)
        self.dropped: list[str] = []  # permanent failures: "what: error"
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._run, name="ecg-tune-mlflow", daemon=True)
        self._thread.start()

    def submit(self, op: Callable[[MlflowClient], Any], what: str = "tracking operation") -> None:
        self._idle.clear()
        self._queue.put(_Op(op, what))

    def _run(self) -> None:
        client = self._client_factory()
        while True:
            try:
                op = self._queue.get(timeout=self._backoff_s)
            except queue.Empty:
                op = None
                if not self._pending:
                    self._idle.set()
                    continue
            else:
                if op is None and not self._pending:  # shutdown sentinel
                    self._idle.set()
                    return
            if op is not None:
                self._pending.append(op)
            while self._pending:
                head = self._pending[0]
                try:
                    head.fn(client)
                except Exception as exc:
                    if is_permanent(exc):
                        self.dropped.append(f"{head.what}: {exc}"[:2000])
                        if len(self.dropped) <= 20 or len(self.dropped) % 100 == 0:
                            log.warning("MLflow refused %s (dropped, not retried; %d so far): %s", head.what, len(self.dropped), exc)
                        self._pending.pop(0)
                        continue
                    self.failures += 1  # server down, restarting, locked database...
                    if self.failures in (1, 10, 100) or self.failures % 1000 == 0:
                        log.warning("MLflow tracking failed (%d failures so far; will retry): %s", self.failures, exc)
                    time.sleep(self._backoff_s)
                    break
                self._pending.pop(0)
            if self._queue.empty() and not self._pending:
                self._idle.set()

    def flush(self, timeout_s: float = 120.0) -> bool:
        """Wait until every submitted operation went through (or the timeout passed)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._idle.wait(0.2) and self._queue.empty() and not self._pending:
                return True
        return False

    def close(self, timeout_s: float = 120.0) -> bool:
        done = self.flush(timeout_s)
        self._queue.put(None)
        return done


class MLflowTracking(Callback):
    """Driver-side Ray Tune callback that records a sweep in MLflow.

    `parent_run_id` and `experiment_id` are created by `ecg_tune.tune.sweep` before Ray starts (so a
    sqlite store's schema is initialised once, by one process).
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, sweep_name: str):
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.sweep_name = sweep_name
        self.trial_runs: dict[str, str] = {}
        self._worker: _Retrying | None = None
        self._attached: set[str] = set()  # trials whose run this process has set RUNNING (not pickled)

    # Ray pickles callbacks into the experiment state: never the thread or client.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_worker"] = None
        state.pop("_attached", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._attached = set()  # a resumed driver attaches every run again

    def get_state(self) -> dict[str, Any]:
        return {"trial_runs": dict(self.trial_runs), "parent_run_id": self.parent_run_id}

    def set_state(self, state: dict[str, Any]) -> None:
        self.trial_runs.update(state.get("trial_runs", {}))

    @property
    def worker(self) -> _Retrying:
        if self._worker is None:
            self._worker = _Retrying(lambda: MlflowClient(self.tracking_uri))
        return self._worker

    # ---------------------------------------------------------------- Tune hooks
    # Every MLflow call runs on the worker thread, run creation included: the driver never waits for
    # MLflow. An operation on a trial's run finds the run id when it runs (after the creation before it).
    def setup(self, stop: Any = None, num_samples: int | None = None, total_num_samples: int | None = None, **info: Any) -> None:
        parent = self.parent_run_id
        self.worker.submit(lambda c: c.update_run(parent, status="RUNNING"), f"setting the sweep run {parent} RUNNING")

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._attach(trial, again=True)  # e.g. retried after an error that ended its run FAILED

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._attach(trial, again=True)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._attach(trial)
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        stamp = int(time.time() * 1000)
        values = numeric_metrics(result)
        artifact = _trial_artifact(result)
        if artifact is not None and (artifact / "encoder.ckpt").is_file():
            # The final result, with the exported encoder: its metrics are logged once, linked to the
            # encoder's LoggedModel (logging them plain first would leave each twice in the history).
            trial_id, experiment_id, config = trial.trial_id, self.experiment_id, unwrap(trial.config or {})

            def model(c: MlflowClient, run: str) -> None:
                from ecg_tune.tune.model_registry import log_trial_model

                log_trial_model(c, experiment_id, run, trial_id, artifact, config, values, step)

            self._on_run(trial_id, f"the trial's logged model and metrics of epoch {step}", model)
            return
        metrics = [Metric(k, v, stamp, step) for k, v in values.items()]
        if metrics:
            self._on_run(trial.trial_id, f"metrics of epoch {step}", lambda c, run: c.log_batch(run, metrics=metrics))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._attach(trial)
        result = trial.last_result or {}
        reason = result.get("failure_reason")
        tags = [RunTag("ecg_tune.state", "diverged" if reason else "finished")]
        if reason:
            tags.append(RunTag("ecg_tune.failure_reason", str(reason)[:5000]))
        artifact = _trial_artifact(result)
        status = "FAILED" if reason else "FINISHED"
        trial_id = trial.trial_id

        def results(c: MlflowClient, run: str) -> None:
            c.log_batch(run, tags=tags)
            if artifact is not None:  # encoder.ckpt and one JSON per evaluation protocol
                c.log_artifacts(run, str(artifact), artifact_path="results")

        # (The encoder's LoggedModel was logged with the final result, in on_trial_result.)
        self._on_run(trial_id, "the trial's results", results)
        self._on_run(trial_id, f"ending the run {status}", lambda c, run: c.set_terminated(run, status=status))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._attach(trial)
        error = str(getattr(trial, "error_file", "") or "trial raised")
        tags = [RunTag("ecg_tune.state", "error"), RunTag("ecg_tune.failure_reason", _error_text(trial)[:5000] or error)]

        def fail(c: MlflowClient, run: str) -> None:
            c.log_batch(run, tags=tags)
            c.set_terminated(run, status="FAILED")

        self._on_run(trial.trial_id, "ending the run FAILED", fail)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.flush()

    # ---------------------------------------------------------------- helpers
    def flush(self, timeout_s: float = 120.0) -> bool:
        ok = self.worker.flush(timeout_s)
        if not ok:
            log.warning("MLflow: some tracking operations are still pending after %.0f s", timeout_s)
        return ok

    def _on_run(self, trial_id: str, what: str, fn: Callable[[MlflowClient, str], Any]) -> None:
        def op(c: MlflowClient) -> None:
            run = self.trial_runs.get(trial_id)
            if run is None:  # its creation was refused (reported then): nothing to log into
                raise _NoRun(f"trial {trial_id} has no MLflow run")
            fn(c, run)

        self.worker.submit(op, f"{what} (trial {trial_id})")

    def _attach(self, trial: Any, again: bool = False) -> str | None:
        """Make sure `trial` has its MLflow run (known, found again by tag, or created: exactly one per
        trial); the work is queued, never done on the driver. Returns the run id when already known.

        The first time in this process (and with `again`), a known run is set RUNNING and gets the
        params it lacks; later calls (every result) do nothing.
        """
        trial_id = trial.trial_id
        if trial_id in self._attached and not again:
            return self.trial_runs.get(trial_id)
        self._attached.add(trial_id)
        config = unwrap(trial.config or {})
        params = params_of(_full_config(trial_config(config)))
        tags = {"mlflow.parentRunId": self.parent_run_id, "mlflow.runName": trial_id, SWEEP_TAG: self.sweep_name,
                TRIAL_TAG: trial_id, ROLE_TAG: "trial", "mlflow.note.content": _note(config)}
        if config.get("_cell"):
            tags["ecg_tune.cell"] = str(config["_cell"])

        def ensure(c: MlflowClient) -> None:
            run_id = self.trial_runs.get(trial_id)
            if run_id is None:
                existing = find_runs(c, self.experiment_id, ecg_tune__trial_id=trial_id, ecg_tune__sweep=self.sweep_name)
                run_id = existing[0].info.run_id if existing else None
            if run_id is None:
                run_id = c.create_run(self.experiment_id, tags=tags).info.run_id
                self.trial_runs[trial_id] = run_id
                _log_params(c, run_id, params)
                return
            # Params are logged right after the run is created: a driver killed in between left the
            # run without them, so log whatever it lacks (same values: allowed).
            self.trial_runs[trial_id] = run_id
            c.update_run(run_id, status="RUNNING")
            have = c.get_run(run_id).data.params
            _log_params(c, run_id, [p for p in params if p.key not in have])

        self.worker.submit(ensure, f"creating or attaching the run of trial {trial_id}")
        return self.trial_runs.get(trial_id)


class _NoRun(Exception):
    """An operation for a trial whose run MLflow refused to create: permanent, dropped."""


def _note(config: dict[str, Any]) -> str:
    """The run's description in MLflow's UI: the trial's sampled values, one line each."""
    return "\n".join(f"- `{k}` = {v}" for k, v in sorted(trial_config(config).items()))[:5000]


def _log_params(client: MlflowClient, run_id: str, params: list[Param]) -> None:
    for i in range(0, len(params), 100):  # MLflow takes at most 100 params per request
        client.log_batch(run_id, params=params[i : i + 100])


def _full_config(flat: dict[str, Any]) -> dict[str, Any]:
    """Every knob of the trial, defaults included, so MLflow shows what actually ran."""
    try:
        return {**TrialConfig.from_flat(flat).to_flat(), **flat}
    except Exception:  # the trial itself will report a bad config; still log what we have
        return flat


def _trial_artifact(result: dict[str, Any]) -> Path | None:
    path = result.get("artifact_dir")
    if isinstance(path, str) and Path(path).is_dir():
        return Path(path)
    return None


def _error_text(trial: Any) -> str:
    path = getattr(trial, "error_file", None) or getattr(trial, "pickled_error_file", None)
    try:
        if path and Path(path).is_file():
            return Path(path).read_text(errors="replace")[-3000:]
    except OSError:
        pass
    return ""


def end_orphans(client: MlflowClient, experiment_id: str, sweep_name: str, known_trials: set[str] | None = None) -> int:
    """End the runs of this sweep still RUNNING: a killed driver's leftovers.

    A trial that started after Ray's last experiment snapshot is unknown to the resumed sweep (its
    Optuna trial is marked FAIL, `searcher.fail_orphans`): its run is deleted when it logged no metric
    (it would only duplicate a trial that ran later), otherwise kept as KILLED and tagged `orphaned`.
    Other leftovers become KILLED."""
    n = 0
    for run in find_runs(client, experiment_id, ecg_tune__sweep=sweep_name):
        if run.info.status != RunStatus.to_string(RunStatus.RUNNING):
            continue
        trial_id = run.data.tags.get(TRIAL_TAG)
        if known_trials is not None and trial_id and trial_id not in known_trials:
            if not run.data.metrics:
                client.delete_run(run.info.run_id)
                n += 1
                continue
            client.set_tag(run.info.run_id, "ecg_tune.state", "orphaned")
        client.set_terminated(run.info.run_id, status="KILLED")
        n += 1
    return n
