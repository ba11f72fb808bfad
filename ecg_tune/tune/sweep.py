"""Run and resume sweeps: Ray Tune trials, an Optuna searcher (or an ablation grid), MLflow tracking.

Layout of a sweep folder (`<storage>/<name>/`): Ray's experiment state (`tuner.pkl`,
`experiment_state-*.json`, trial folders), plus ours: `sweep.yaml` (the space as written),
`ecg_tune_sweep.json` (resolved settings for `resume`), `mlflow.db` (the default tracking store) and
`trials/<trial_id>/` (each trial's latest checkpoint, probe state and final artifacts).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ecg_tune
from ecg_tune.errors import ConfigError, EcgTuneError
from ecg_tune.tune.credentials import public_uri
from ecg_tune.tune.leaderboard import leaderboard, print_leaderboard  # noqa: F401 (print_leaderboard: re-exported)
from ecg_tune.tune.ray_start import init_ray as _init_ray
from ecg_tune.tune.ray_start import snapshot_period as _snapshot_period
from ecg_tune.tune.spaces import SweepSpec, load_spec, parse_spec
from ecg_tune.tune.tuner import build_tuner as _tuner
from ecg_tune.tune.tuner import trainable as _trainable

log = logging.getLogger(__name__)

SETTINGS_FILE = "ecg_tune_sweep.json"
DEFAULT_STORAGE = "ecg-tune-output/sweeps"
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "1")


@dataclass
class SweepSettings:
    name: str
    sweep_dir: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    dataset_paths: list[str]
    optuna_storage: str | None = None
    num_samples: int = 0
    dataset_digests: dict[str, str] = field(default_factory=dict)  # path -> sha256 of its manifest.json
    warm_from: str | None = None  # an earlier sweep folder whose trials seed the study (tune/warmstart.py)
    warm_map: dict[str, str] = field(default_factory=dict)  # its parameter names -> this space's

    def save(self) -> None:
        path = Path(self.sweep_dir) / SETTINGS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)

    @classmethod
    def load(cls, sweep_dir: Path) -> SweepSettings:
        return cls(**json.loads((sweep_dir / SETTINGS_FILE).read_text()))


@dataclass
class SweepResult:
    settings: SweepSettings
    leaderboard: Any  # pandas DataFrame
    errors: int
    best_model_uri: str | None
    metric: str = "probe_auc"
    failures: dict[str, str] = field(default_factory=dict)  # trial id -> the error it raised
    stopped: str | None = None  # why the sweep stopped early (failfast), if it did


def _storage_root(storage: str | None) -> str:
    """The sweeps folder: a path or a `file://` URI. A sweep folder holds files that several processes
    write in place (the MLflow sqlite store, trial checkpoints, Ray's experiment state), so object
    stores (s3://, gs://) are not supported as sweep storage: on a cluster use a shared filesystem
    (NFS, EFS, Lustre, a mounted bucket) and keep datasets on any pyarrow/fsspec URI."""
    root = storage or DEFAULT_STORAGE
    if root.startswith("file://"):
        from urllib.parse import unquote, urlsplit

        root = unquote(urlsplit(root).path)
    elif "://" in root:
        raise ConfigError("--storage", f"{root!r}: sweep storage must be a path or file:// URI on a filesystem all "
                                       "nodes share (NFS, EFS, a mounted bucket); datasets may be s3:// etc.")
    return str(Path(root).expanduser().resolve())


def _git_commit() -> str:
    try:
        repo = Path(ecg_tune.__file__).resolve().parents[1]
        return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("ecg-tune", "torch", "ray", "optuna", "mlflow", "pyarrow", "numpy", "pandas", "wfdb"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def dataset_paths(spec: SweepSpec) -> list[str]:
    """Every dataset path any trial of the sweep may open (pretraining choices included)."""
    fixed = spec.fixed_flat()
    paths = [p for p in fixed["data.pretrain"].split(",") if p]
    if fixed.get("data.downstream"):
        paths.append(fixed["data.downstream"])
    for cfg in (spec.ablation.grid() if spec.ablation else []):
        if "data.pretrain" in cfg:
            paths += spec.resolve_pretrain(cfg["data.pretrain"]).split(",")
    from ecg_tune.tune.spaces import BranchParam, ChoiceParam, SubsetParam

    def walk(nodes: list) -> None:
        for n in nodes:
            if isinstance(n, ChoiceParam) and n.key == "data.pretrain":
                for c in n.choices:
                    paths.extend(spec.resolve_pretrain(c).split(","))
            if isinstance(n, BranchParam | SubsetParam):
                for sub in n.options.values():
                    walk(sub)

    walk(spec.space)
    return list(dict.fromkeys(p for p in paths if p))


def _open_data(paths: list[str], sweep_dir: str, spec: SweepSpec) -> Any:
    from ecg_tune.plugins import SCHEDULERS
    from ecg_tune.tune.trainable import SweepData

    # PBT changes these during a trial; MLflow params cannot change, so trials report them as metrics.
    mutated = SCHEDULERS[spec.effective_scheduler].mutated_keys(spec)
    return SweepData({p: _open_one(p, spec) for p in paths}, sweep_dir=sweep_dir, report_config=mutated)


def _open_one(path: str, spec: SweepSpec) -> Any:
    """In memory; with `data.mode: stream` the trials stream the pretraining corpora, so the driver
    holds only their metadata (the downstream dataset stays in memory, trials share it)."""
    from ecg_tune.data import open_dataset
    from ecg_tune.data.stream_mode import open_stream_dataset

    fixed = spec.fixed_flat()
    if fixed.get("data.mode") == "stream" and path != fixed.get("data.downstream"):
        return open_stream_dataset(path)
    return open_dataset(path)


def run_sweep(
    spec_or_path: SweepSpec | str | Path,
    *,
    name: str | None = None,
    storage: str | None = None,
    address: str | None = None,
    tracking_uri: str | None = None,
    num_samples: int | None = None,
    data: str | None = None,
    optuna_storage: str | None = None,
    warm_from: str | None = None,
    warm_map: dict[str, str] | None = None,
) -> SweepResult:
    """Run a sweep from a YAML space. `data` overrides both pretraining and downstream datasets."""
    import mlflow  # noqa: F401  (fail early if the tracking stack is missing)

    from ecg_tune.tune import preflight
    from ecg_tune.tune.spaces import check_name

    spec = spec_or_path if isinstance(spec_or_path, SweepSpec) else load_spec(spec_or_path)
    if name:
        spec.name = check_name("--name", name)  # the same rule as the YAML's name
    preflight.check_spec(spec)
    preflight.check_num_samples(num_samples)
    if data:
        spec.pretrain = [data]
        spec.downstream = data
        spec.fixed.pop("data.pretrain", None)
        spec.fixed.pop("data.downstream", None)
    root = _storage_root(storage)
    preflight.check_storage_folder(root)
    sweep_dir = Path(root) / spec.name
    if (sweep_dir / SETTINGS_FILE).exists():
        raise EcgTuneError(f"sweep {spec.name!r} already exists in {sweep_dir}: use `ecg-tune resume {sweep_dir}` or another --name")
    # Everything that can fail before the first trial fails here, before any folder, run or Ray
    # process exists: the servers and storages, the data, the address.
    if tracking_uri:
        preflight.check_tracking_server(public_uri(tracking_uri))
    if optuna_storage:
        preflight.check_optuna_storage(public_uri(optuna_storage))
    paths = dataset_paths(spec)
    data_obj = _open_data(paths, str(sweep_dir), spec)
    preflight.check_data(spec, data_obj.datasets)
    _init_ray(address, spec)  # a wrong --address fails here too, before the folder exists
    created = not sweep_dir.exists()
    try:
        warm = (str(resolve_sweep_dir(warm_from, storage)), warm_map or {}) if warm_from else None
        tuner, settings = _start(spec, sweep_dir, data_obj, paths, tracking_uri, optuna_storage, num_samples, warm)
    except BaseException:
        if created:  # a sweep that never started must not block its name
            shutil.rmtree(sweep_dir, ignore_errors=True)
        raise
    grid = tuner.fit()
    return _finish(spec, settings, grid)


def _start(spec: SweepSpec, sweep_dir: Path, data_obj: Any, paths: list[str], tracking_uri: str | None,
           optuna_storage: str | None, num_samples: int | None,
           warm: tuple[str, dict[str, str]] | None = None) -> tuple[Any, SweepSettings]:
    """The sweep folder, MLflow experiment and parent run, settings, and the Tuner (not started)."""
    from mlflow.tracking import MlflowClient

    from ecg_tune.tune import preflight
    from ecg_tune.tune.failfast import RepeatedFailure
    from ecg_tune.tune.tracking import MLflowTracking, ensure_experiment

    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "sweep.yaml").write_text(spec.source_text)

    uri = public_uri(tracking_uri) if tracking_uri else f"sqlite:///{sweep_dir / 'mlflow.db'}"
    client = MlflowClient(uri)
    # With the embedded store, artifacts live in the sweep folder too, so the folder is self-contained.
    artifacts = None if tracking_uri else (sweep_dir / "mlartifacts").as_uri()
    experiment_id = ensure_experiment(client, spec.name, artifacts)
    parent = client.create_run(
        experiment_id,
        run_name=f"sweep:{spec.name}",
        tags={"ecg_tune.sweep": spec.name, "ecg_tune.role": "sweep", "ecg_tune.git_commit": _git_commit()},
    )
    settings = SweepSettings(
        name=spec.name, sweep_dir=str(sweep_dir), tracking_uri=uri, experiment_id=experiment_id,
        parent_run_id=parent.info.run_id, dataset_paths=paths,
        # The study is durable by default (optuna-dashboard opens it during and after the sweep; resume).
        optuna_storage=public_uri(optuna_storage) if optuna_storage else f"sqlite:///{sweep_dir / 'optuna.db'}",
        num_samples=num_samples or spec.budget.trials, dataset_digests=preflight.dataset_digests(data_obj),
        warm_from=warm[0] if warm else None, warm_map=warm[1] if warm else {},
    )
    try:
        _log_sweep_inputs(client, settings, spec)
        _log_manifests(client, settings, data_obj, spec)
        tracking = MLflowTracking(uri, experiment_id, settings.parent_run_id, spec.name)
        tuner = _tuner(spec, settings, data_obj, settings.num_samples, [tracking, RepeatedFailure(spec.name)])
    except BaseException:
        client.set_terminated(settings.parent_run_id, status="FAILED")
        raise
    settings.save()  # last: a folder with settings is a sweep that `resume` can continue
    return tuner, settings


def resolve_sweep_dir(name_or_path: str, storage: str | None = None) -> Path:
    p = Path(name_or_path).expanduser()
    if (p / SETTINGS_FILE).is_file():
        return p.resolve()
    q = Path(_storage_root(storage)) / name_or_path
    if (q / SETTINGS_FILE).is_file():
        return q
    raise EcgTuneError(f"no sweep found at {p} or {q} (expected a folder with {SETTINGS_FILE})")


def resume_sweep(name_or_path: str, *, storage: str | None = None, address: str | None = None) -> SweepResult:
    """Continue a sweep: finished trials are kept, unfinished continue from checkpoints, errored retry."""

    sweep_dir = resolve_sweep_dir(name_or_path, storage)
    settings = SweepSettings.load(sweep_dir)
    spec = parse_spec(_yaml(sweep_dir / "sweep.yaml"), base_dir=str(sweep_dir), source_text=(sweep_dir / "sweep.yaml").read_text())
    spec.name = settings.name
    data_obj = _open_data(settings.dataset_paths, str(sweep_dir), spec)
    from ecg_tune.tune.preflight import check_digests

    check_digests(settings.dataset_digests, data_obj, settings.name)
    _init_ray(address, spec)
    _snapshot_period(settings.num_samples)
    grid = restore_tuner(sweep_dir, _trainable(spec, data_obj)).fit()
    return _finish(spec, settings, grid)


def restore_tuner(sweep_dir: Path, trainable: Any) -> Any:
    """Ray's `Tuner.restore` of the sweep, or one clear error when its saved state holds classes this
    version no longer has (e.g. a sweep started before the searcher became `StudySearcher`)."""
    from ray import tune

    try:
        return tune.Tuner.restore(str(sweep_dir), trainable=trainable, resume_unfinished=True, resume_errored=True)
    except (AttributeError, ImportError) as exc:
        if "Can't get attribute" not in str(exc) and not isinstance(exc, ImportError):
            raise
        raise EcgTuneError(
            f"{sweep_dir}: this sweep was started by another ecg-tune version, whose saved search state this "
            f"version cannot read ({exc}); resume it with that version, or start a new sweep that continues "
            f"from its trials: ecg-tune sweep SPACE.yaml --warm-from {sweep_dir}") from None


def _yaml(path: Path) -> Any:
    import yaml

    return yaml.safe_load(path.read_text())


def _log_sweep_inputs(client: Any, settings: SweepSettings, spec: SweepSpec) -> None:
    from mlflow.entities import Param

    run_id = settings.parent_run_id
    client.log_artifact(run_id, str(Path(settings.sweep_dir) / "sweep.yaml"))
    params = [Param("sweep.name", spec.name), Param("sweep.scheduler", spec.scheduler),
              Param("sweep.sampler", spec.searcher.sampler), Param("sweep.trials", str(settings.num_samples)),
              Param("sweep.max_epochs", str(spec.budget.max_epochs)), Param("sweep.objective", spec.objective.metric)]
    params += [Param(f"version.{k}", v) for k, v in _package_versions().items()]
    client.log_batch(run_id, params=params)


def _log_manifests(client: Any, settings: SweepSettings, data_obj: Any, spec: SweepSpec) -> None:
    import hashlib

    from mlflow.entities import RunTag

    from ecg_tune.tune.mlflow_inputs import log_dataset_inputs

    fixed = spec.fixed_flat()  # datasets as MLflow run inputs, with digests and the pretraining exclusions
    down = fixed.get("data.downstream") or None
    pretrain = [p for p in settings.dataset_paths if p != down or p in fixed["data.pretrain"].split(",")]
    log_dataset_inputs(client, settings.parent_run_id, data_obj, settings.dataset_digests, pretrain, down)

    tags = []
    for i, (path, ds) in enumerate(data_obj.datasets.items()):
        manifest = Path(ds.path) / "manifest.json" if hasattr(ds, "path") else None
        if manifest and manifest.is_file():
            digest = hashlib.sha256(manifest.read_bytes()).hexdigest()[:16]
            tags.append(RunTag(f"dataset.{i}.manifest_sha256", digest))
            tags.append(RunTag(f"dataset.{i}.path", path[:5000]))
    if tags:
        client.log_batch(settings.parent_run_id, tags=tags)


def _finish(spec: SweepSpec, settings: SweepSettings, grid: Any) -> SweepResult:
    from mlflow.tracking import MlflowClient

    from ecg_tune.tune.csvsafe import safe_frame
    from ecg_tune.tune.failfast import error_line, verdict
    from ecg_tune.tune.model_registry import register_best
    from ecg_tune.tune.tracking import end_orphans

    client = MlflowClient(settings.tracking_uri)
    board = leaderboard(grid, spec)
    errors = int(getattr(grid, "num_errors", 0))
    model_uri = None
    try:
        model_uri = register_best(client, settings, spec, board)
    except Exception as exc:  # registry problems must not lose the sweep's results
        log.warning("could not register the best encoder: %s", exc)
    # Every trial Ray knows has a folder trial_<id> (tuner.short_trial_name), with or without results.
    known = {Path(r.path).name.removeprefix("trial_") for r in grid if getattr(r, "path", None)}
    ended = end_orphans(client, settings.experiment_id, spec.name, known or None)
    if ended:
        log.info("marked %d orphaned runs KILLED", ended)
    status = "FINISHED" if errors == 0 else "FAILED"
    client.set_terminated(settings.parent_run_id, status=status)
    try:
        board_path = Path(settings.sweep_dir) / "leaderboard.csv"
        safe_frame(board).to_csv(board_path, index=False)  # no cell a spreadsheet would run as a formula
        client.log_artifact(settings.parent_run_id, str(board_path))
    except Exception as exc:
        log.warning("could not log the leaderboard: %s", exc)
    failures = {Path(r.path).name.removeprefix("trial_"): error_line(str(r.error))
                for r in grid if getattr(r, "error", None) is not None and getattr(r, "path", None)}
    return SweepResult(settings, board, errors, model_uri, spec.objective.metric, failures, verdict(spec.name))

