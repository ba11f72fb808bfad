"""Read a sweep back from MLflow (the source of truth): parent run, trial runs, histories, artifacts.

Works the same against the sweep folder's sqlite store and against a remote tracking server; a
missing piece (no sweep.yaml, no parent run, runs still RUNNING, failed trials, no protocol artifacts)
becomes a note in the report, never an exception.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from mlflow.tracking import MlflowClient

from ecg_tune.errors import EcgTuneError
from ecg_tune.plugins import PROTOCOLS
from ecg_tune.tune.spaces import Ablation, Node, _parse_space
from ecg_tune.tune.sweep import SweepSettings, resolve_sweep_dir

BUDGET_KEY = "budget_complete"
# MLflow run status → our trial state, for runs without an `ecg_tune.state` tag (still running, or
# ended by `end_orphans` after a driver crash).
_STATE_OF_STATUS = {"RUNNING": "running", "SCHEDULED": "running", "KILLED": "killed", "FAILED": "error",
                    "FINISHED": "finished"}


def curve_protocols(trials: list[Trial]) -> list[str]:
    """The registered protocols whose results in `trials` are curves (`<protocol>.<x>.test_auc` metrics)."""
    keys = {k for t in trials for k in t.metrics if k.endswith(".test_auc")}
    return [p for p in PROTOCOLS if any(k.startswith(f"{p}.") and k != f"{p}.test_auc" for k in keys)]


def scalar_protocols(trials: list[Trial]) -> list[str]:
    """The registered protocols with one final test AUC (`<protocol>.test_auc`): all but the curves."""
    curves = set(curve_protocols(trials))
    return [p for p in PROTOCOLS if p not in curves]


@dataclass
class Trial:
    run_id: str
    trial_id: str
    cell: str | None
    state: str  # finished | diverged | error | running | killed
    status: str  # the MLflow run status
    failure: str
    start_time: int
    params: dict[str, str]
    metrics: dict[str, float]  # the last value of every metric (MLflow's latest step)

    @property
    def complete(self) -> bool:
        """Trained all epochs and ended cleanly: the trials statistics and importance are made of."""
        return self.state == "finished" and self.metrics.get(BUDGET_KEY) == 1.0

    def value(self, key: str) -> float:
        v = self.metrics.get(key)
        return float(v) if v is not None and math.isfinite(v) else math.nan


@dataclass
class SweepRecord:
    name: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str | None
    sweep_dir: Path | None
    objective: str  # the first (or only) objective: what ranks the trials
    mode: str  # max | min
    space: list[Node]
    ablation: Ablation | None
    trials: list[Trial]  # in start order
    client: MlflowClient
    notes: list[str] = field(default_factory=list)
    objectives: list[str] = field(default_factory=list)  # all objectives of a multi-objective sweep
    modes: list[str] = field(default_factory=list)
    _histories: dict[tuple[str, str], list[tuple[int, float]]] = field(default_factory=dict, repr=False)
    _jsons: dict[tuple[str, str], dict[str, Any] | None] = field(default_factory=dict, repr=False)
    _scores: dict[tuple[str, str], dict[str, Any] | None] = field(default_factory=dict, repr=False)

    def better(self, a: float, b: float) -> bool:
        """Whether objective value `a` beats `b` (NaN never does)."""
        if math.isnan(a):
            return False
        if math.isnan(b):
            return True
        return a > b if self.mode == "max" else a < b

    def history(self, trial: Trial, key: str) -> list[tuple[int, float]]:
        """(epoch, value) pairs of a metric; a re-reported epoch (resumed trial) keeps its last value."""
        cache_key = (trial.run_id, key)
        if cache_key not in self._histories:
            try:
                points = self.client.get_metric_history(trial.run_id, key)
            except Exception as exc:
                self.notes.append(f"could not read the {key} history of trial {trial.trial_id}: {exc}")
                points = []
            by_step: dict[int, tuple[int, float]] = {}
            for m in points:
                if m.step not in by_step or m.timestamp >= by_step[m.step][0]:
                    by_step[m.step] = (m.timestamp, float(m.value))
            self._histories[cache_key] = [(s, v) for s, (_, v) in sorted(by_step.items()) if math.isfinite(v)]
        return self._histories[cache_key]

    def protocol_json(self, trial: Trial, protocol: str) -> dict[str, Any] | None:
        """The `results/<protocol>.json` artifact of a trial (a ProtocolResult or CurveResult), or None."""
        cache_key = (trial.run_id, protocol)
        if cache_key not in self._jsons:
            self._jsons[cache_key] = _download_json(self.client, trial.run_id, f"results/{protocol}.json")
        return self._jsons[cache_key]

    def protocol_scores(self, trial: Trial, protocol: str) -> dict[str, Any] | None:
        """The per-record test scores `results/<protocol>.scores.npz` of a trial (`record_ids`, `scores`
        (n, C), `targets` (n, C), `codes` (C)), or None (absent: an older sweep, or unreadable)."""
        cache_key = (trial.run_id, protocol)
        if cache_key not in self._scores:
            self._scores[cache_key] = _download_npz(self.client, trial.run_id, f"results/{protocol}.scores.npz")
        return self._scores[cache_key]


SCORE_ARRAYS = ("record_ids", "scores", "targets", "codes")


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """MLflow draws a progress bar per download; a report downloads many small files."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    old = os.environ.get(key)
    if old is None:
        os.environ[key] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)


def _download_text(client: MlflowClient, run_id: str, path: str) -> str | None:
    try:
        with _no_progress_bars(), tempfile.TemporaryDirectory(prefix="ecg-tune-report-") as tmp:
            return Path(client.download_artifacts(run_id, path, tmp)).read_text()
    except Exception:  # absent (protocol not run, trial failed) or unreadable: the caller falls back
        return None


def _download_npz(client: MlflowClient, run_id: str, path: str) -> dict[str, Any] | None:
    import numpy as np

    try:
        with _no_progress_bars(), tempfile.TemporaryDirectory(prefix="ecg-tune-report-") as tmp:
            with np.load(client.download_artifacts(run_id, path, tmp), allow_pickle=False) as data:
                arrays = {k: np.asarray(data[k]) for k in SCORE_ARRAYS}
    except Exception:  # absent or malformed: the paired test notes it
        return None
    n, c = arrays["scores"].shape if arrays["scores"].ndim == 2 else (-1, -1)
    if arrays["targets"].shape != (n, c) or arrays["record_ids"].shape != (n,) or arrays["codes"].shape != (c,):
        return None
    return arrays


def _download_json(client: MlflowClient, run_id: str, path: str) -> dict[str, Any] | None:
    text = _download_text(client, run_id, path)
    try:
        data = json.loads(text) if text is not None else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _search(client: MlflowClient, experiment_id: str, filter_string: str) -> list[Any]:
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _trial_of(run: Any) -> Trial:
    tags = run.data.tags
    status = run.info.status
    state = tags.get("ecg_tune.state") or _STATE_OF_STATUS.get(status, status.lower())
    return Trial(
        run_id=run.info.run_id,
        trial_id=tags.get("ecg_tune.trial_id", run.info.run_name or run.info.run_id),
        cell=tags.get("ecg_tune.cell") or None,
        state=state,
        status=status,
        failure=tags.get("ecg_tune.failure_reason", ""),
        start_time=int(run.info.start_time or 0),
        params=dict(run.data.params),
        metrics={k: float(v) for k, v in run.data.metrics.items()},
    )


def _dedupe(trials: list[Trial], notes: list[str]) -> list[Trial]:
    """One run per trial id: a resumed trial should reuse its run, but an old store may hold two."""
    chosen: dict[str, Trial] = {}
    for t in trials:
        old = chosen.get(t.trial_id)
        # Prefer the run that ended, then the later one.
        if old is None or ((t.status != "RUNNING", t.start_time) > (old.status != "RUNNING", old.start_time)):
            chosen[t.trial_id] = t
    if len(chosen) < len(trials):
        notes.append(f"{len(trials) - len(chosen)} duplicate trial runs ignored (same ecg_tune.trial_id)")
    return sorted(chosen.values(), key=lambda t: (t.start_time, t.trial_id))


@dataclass
class SpaceInfo:
    objective: str | None = None
    mode: str | None = None
    objectives: list[str] = field(default_factory=list)
    modes: list[str] = field(default_factory=list)
    space: list[Node] = field(default_factory=list)
    ablation: Ablation | None = None


def read_space(text: str) -> SpaceInfo:
    """Objective, space nodes and ablation of a sweep.yaml, without validating implementation params.

    The report must open sweeps written by older versions, whose parameter names may have changed,
    so the full `parse_spec` validation is not used here.
    """
    doc = yaml.safe_load(text) or {}
    info = SpaceInfo()
    obj = doc.get("objective") or {}
    metric, mode = obj.get("metric"), obj.get("mode")
    if isinstance(metric, list):  # several objectives: the first ranks, all mark the Pareto front
        modes = mode if isinstance(mode, list) else [mode or "max"] * len(metric)
        info.objectives, info.modes = [str(m) for m in metric], [str(m) for m in modes]
        metric, mode = (metric[0], modes[0]) if metric else (None, None)
    info.objective = metric
    info.mode = mode
    info.space = _parse_space("space", doc.get("space") or {})
    abl = doc.get("ablation")
    if isinstance(abl, dict):
        seeds = abl.get("seeds", [0])
        info.ablation = Ablation(
            baseline=dict(abl.get("baseline") or {}),
            factors={str(k): list(v) for k, v in (abl.get("factors") or {}).items()},
            design=abl.get("design", "one_at_a_time"),
            seeds=list(range(seeds)) if isinstance(seeds, int) else list(seeds),
        )
    return info


def _locate(name_or_path: str, storage: str | None, tracking_uri: str | None) -> tuple[str, str, Path | None, SweepSettings | None]:
    """(sweep name, tracking URI, sweep folder or None, settings or None)."""
    try:
        sweep_dir = resolve_sweep_dir(name_or_path, storage)
    except EcgTuneError as exc:
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise EcgTuneError(f"{exc}; to report on a sweep on a tracking server, pass its name with --tracking-uri") from None
        return Path(name_or_path).name, uri, None, None
    settings = SweepSettings.load(sweep_dir)
    return settings.name, tracking_uri or settings.tracking_uri, sweep_dir, settings


def open_sweep(name_or_path: str, *, storage: str | None = None, tracking_uri: str | None = None) -> SweepRecord:
    name, uri, sweep_dir, settings = _locate(name_or_path, storage, tracking_uri)
    client = MlflowClient(uri)
    notes: list[str] = []
    experiment = client.get_experiment_by_name(name)
    if experiment is None and settings is not None:
        experiment = client.get_experiment(settings.experiment_id)
    if experiment is None:
        raise EcgTuneError(f"no MLflow experiment named {name!r} at {uri}")
    exp_id = experiment.experiment_id

    parent_id = settings.parent_run_id if settings else None
    if parent_id is None:
        parents = _search(client, exp_id, f"tags.`ecg_tune.role` = 'sweep' and tags.`ecg_tune.sweep` = '{name}'")
        parents.sort(key=lambda r: r.info.start_time or 0, reverse=True)
        if parents:
            parent_id = parents[0].info.run_id
            if len(parents) > 1:
                notes.append(f"{len(parents)} sweep runs named {name!r} in the experiment: reporting the latest ({parent_id})")
        else:
            notes.append("no sweep (parent) run found: reading every trial run of the experiment tagged with the sweep name")

    if parent_id:
        runs = _search(client, exp_id, f"tags.`mlflow.parentRunId` = '{parent_id}' and tags.`ecg_tune.role` = 'trial'")
    else:
        runs = _search(client, exp_id, f"tags.`ecg_tune.role` = 'trial' and tags.`ecg_tune.sweep` = '{name}'")
    trials = _dedupe([_trial_of(r) for r in runs], notes)

    text = _download_text(client, parent_id, "sweep.yaml") if parent_id else None
    if text is None and sweep_dir is not None and (sweep_dir / "sweep.yaml").is_file():
        text = (sweep_dir / "sweep.yaml").read_text()
    info = SpaceInfo()
    if text is None:
        notes.append("sweep.yaml not found (neither a parent-run artifact nor in the sweep folder): no search space")
    else:
        try:
            info = read_space(text)
        except Exception as exc:
            notes.append(f"sweep.yaml could not be read ({exc}): no search space")

    objective = info.objective
    if not objective and parent_id:
        try:
            objective = client.get_run(parent_id).data.params.get("sweep.objective")
        except Exception:
            objective = None
    objective = objective or "probe_auc"
    mode = info.mode or ("min" if objective == "loss" else "max")
    return SweepRecord(
        name=name, tracking_uri=uri, experiment_id=exp_id, parent_run_id=parent_id, sweep_dir=sweep_dir,
        objective=objective, mode=mode, space=info.space, ablation=info.ablation, trials=trials,
        client=client, notes=notes, objectives=info.objectives or [objective], modes=info.modes or [mode],
    )
