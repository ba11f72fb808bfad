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
from ecg_tune.tune.leaderboard import leaderboard, print_leaderboard  # noqa: F401 (print_leaderboard: re-exported)
from ecg_tune.tune.spaces import SweepSpec, load_spec, parse_spec

log = logging.getLogger(__name__)

SETTINGS_FILE = "ecg_tune_sweep.json"
DEFAULT_STORAGE = "ecg-tune-output/sweeps"
# How often Ray snapshots the experiment state, unless the user set it: see _snapshot_period.
_USER_SNAPSHOT_S = os.environ.get("TUNE_GLOBAL_CHECKPOINT_S")
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


def public_uri(uri: str) -> str:
    """`uri` without its user:password. The credentials move into MLflow's environment variables
    (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD) of this process, so they are never written
    to the sweep folder, Ray's experiment state, MLflow params or the terminal. For a PostgreSQL URL
    (Optuna storage) the password moves into libpq's PGPASSWORD of this process: Ray pickles the
    searcher, and with it the storage URL, into the experiment folder. `resume` then needs PGPASSWORD
    (or ~/.pgpass) again. Other databases have no such variable: a password in their URL is refused."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(uri)
    if not parts.password and not parts.username:
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    if parts.scheme in ("http", "https"):
        if parts.username:
            os.environ.setdefault("MLFLOW_TRACKING_USERNAME", unquote(parts.username))
        if parts.password:
            os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", unquote(parts.password))
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    if parts.password:
        if not parts.scheme.startswith("postgresql"):
            raise ConfigError("--optuna-storage", f"a password in a {parts.scheme} URL would be stored with the sweep; "
                                                  "use the database's own credentials file, or PostgreSQL with PGPASSWORD/.pgpass")
        password = unquote(parts.password)
        if os.environ.get("PGPASSWORD", password) != password:
            raise ConfigError("--optuna-storage", "PGPASSWORD is already set to another password; give the password "
                                                  "once, in PGPASSWORD or ~/.pgpass, not in the URL")
        os.environ["PGPASSWORD"] = password
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit((parts.scheme, user + netloc, parts.path, parts.query, parts.fragment))


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
    from ecg_tune.data import open_dataset
    from ecg_tune.plugins import SCHEDULERS
    from ecg_tune.tune.trainable import SweepData

    # PBT changes these during a trial; MLflow params cannot change, so trials report them as metrics.
    mutated = SCHEDULERS[spec.effective_scheduler].mutated_keys(spec)
    return SweepData({p: open_dataset(p) for p in paths}, sweep_dir=sweep_dir, report_config=mutated)


def _trainable(spec: SweepSpec, data: Any) -> Any:
    from ray import tune

    from ecg_tune.tune.trainable import train_trial

    resources: dict[str, float] = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu, **spec.resources.custom}
    return tune.with_resources(tune.with_parameters(train_trial, data=data), resources)


def _init_ray(address: str | None, spec: SweepSpec) -> None:
    """Connect to a Ray cluster (`auto`, `HOST:PORT`, or `$RAY_ADDRESS`) or start a local one.

    - A local start (no address anywhere) takes every CPU this process may use, lets Ray detect GPUs,
      and starts no dashboard.
    - Connecting: `HOST:PORT` is the head's GCS port (`ray start --head --port`). It is probed with a
      plain TCP connect first, because Ray's own client retries an unreachable or wrong address for a
      long time while ignoring SIGTERM (platform notes §7.2).
    - Token auth (platform notes §3.7): `RAY_AUTH_MODE` is Ray's and is never overridden. When it is
      unset but a token is given (`RAY_AUTH_TOKEN` / `RAY_AUTH_TOKEN_PATH`), the user clearly means
      token auth, which Ray would not enable by itself for an explicit address: it is set to `token`.
    Errors become one `EcgTuneError` line that says what to check.
    """
    import socket

    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True, "configure_logging": True,
                              "logging_level": logging.WARNING}
    address = (address or os.environ.get("RAY_ADDRESS") or "").strip() or None

    def auth_hint() -> str:
        mode = os.environ.get("RAY_AUTH_MODE")
        token = "RAY_AUTH_TOKEN" in os.environ or "RAY_AUTH_TOKEN_PATH" in os.environ
        return (f"RAY_AUTH_MODE={mode or '(unset)'}, token {'given' if token else 'not given'}; a cluster started "
                "with token auth needs RAY_AUTH_MODE=token and the same token (RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH) "
                "on every node and on this driver (cluster/README.md, Security)")

    if address is None:
        try:
            num_cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            num_cpus = os.cpu_count() or 1
        try:
            # "local": never join a cluster that `ray start` left in /tmp/ray/ray_current_cluster.
            ray.init(address="local", num_cpus=num_cpus, **kwargs)
        except Exception as exc:
            raise EcgTuneError(f"could not start a local Ray instance: {exc}") from exc
        return

    if "://" in address:
        raise ConfigError("--address", f"{address!r}: Ray Client addresses (ray://) are not supported; run the sweep "
                                       "on a cluster node (e.g. the head, or via `ray job submit`) with --address auto or HOST:PORT")
    if address != "auto":
        host, sep, port = address.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError("--address", f"{address!r}: expected auto or HOST:PORT (the head's GCS port, e.g. 10.0.0.5:6380)")
        try:
            with socket.create_connection((host, int(port)), timeout=float(os.environ.get("ECG_TUNE_CONNECT_TIMEOUT_S", "10"))):
                pass
        except OSError as exc:
            raise EcgTuneError(f"cannot reach the Ray head at {address} ({exc}); is `ray start --head --port={port}` "
                               "running there, and is the port open from this machine?") from None
    if "RAY_AUTH_MODE" not in os.environ and ("RAY_AUTH_TOKEN" in os.environ or "RAY_AUTH_TOKEN_PATH" in os.environ):
        os.environ["RAY_AUTH_MODE"] = "token"
        try:  # Ray caches its config at import: refresh it, as Ray's own token setup does (ray 2.60)
            from ray._raylet import Config

            Config.initialize("")
        except Exception:  # pragma: no cover - a future Ray may read the variable lazily
            pass
        log.info("RAY_AUTH_TOKEN given and RAY_AUTH_MODE unset: connecting with RAY_AUTH_MODE=token")
    try:
        ray.init(address=address, **kwargs)
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        hint = auth_hint() if "auth" in text.lower() or "token" in text.lower() else (
            "is a Ray cluster running there (for auto: on this machine, or RAY_ADDRESS set)? " + auth_hint())
        raise EcgTuneError(f"could not connect to the Ray cluster at {address}: {text.splitlines()[0][:300]}; {hint}") from exc


def _snapshot_period(n_trials: int) -> None:
    """Ray writes the state of every trial in each experiment snapshot, so a snapshot costs O(trials).
    Every 2 s up to 100 trials, then proportionally longer (1,000 trials: 20 s), which keeps the
    driver's snapshot work per trial constant. What a driver crash loses in between is bounded
    anyway: trials keep their own newest checkpoint and re-report a final result Ray missed."""
    if _USER_SNAPSHOT_S is None:
        os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = str(max(2, round(n_trials / 50)))


def _cluster_slots(spec: SweepSpec) -> int:
    """How many trials fit on the cluster now (0 if not one does yet, e.g. before autoscaling)."""
    import ray

    total = ray.cluster_resources()
    need = {"CPU": spec.resources.cpu, "GPU": spec.resources.gpu, **spec.resources.custom}
    fits = [total.get(name, 0.0) / amount for name, amount in need.items() if amount > 0]
    return int(min(fits) + 1e-9) if fits else 0


def _short_trial_name(trial: Any) -> str:
    # Ray's default embeds every config value in the folder name and hits path limits (§3.9).
    return f"trial_{trial.trial_id}"


def _tuner(spec: SweepSpec, settings: SweepSettings, data: Any, num_samples: int, callbacks: list) -> Any:
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    from ecg_tune.plugins import SCHEDULERS
    from ecg_tune.tune.failfast import StopOnVerdict
    from ecg_tune.tune.searcher import make_scheduler, make_searcher
    from ecg_tune.tune.spaces import GRID_KEY, sample_population

    sched = SCHEDULERS[spec.effective_scheduler]  # fifo for an ablation grid
    max_conc = spec.budget.max_concurrent or None
    if max_conc is None and spec.ablation is None and not (sched.population or sched.limits_concurrency):
        # Ray lets a searcher that has no concurrency limit keep just one trial pending, so trials
        # would start one at a time; limit it to the trials the cluster holds now instead.
        slots = _cluster_slots(spec)
        max_conc = slots if slots >= 1 else None
        log.info("budget.max_concurrent 0: %s trials at a time (the cluster's current capacity)", slots or "unlimited")
    elif sched.limits_concurrency:
        max_conc = None  # the scheduler limits concurrency itself (e.g. ecg_tune/tune/asha.py)
    _snapshot_period(num_samples)
    param_space: dict[str, Any] = {}
    if spec.ablation is not None or sched.population:
        # Every trial fully determined by one grid value, its whole flat config: an ablation cell (per
        # seed), or a PBT population member (Ray's PBT takes no search algorithm: the population is
        # drawn from the space here, and PBT then exploits and explores).
        cells = spec.ablation.grid() if spec.ablation is not None else sample_population(spec, num_samples)
        param_space = {GRID_KEY: tune.grid_search([{**spec.fixed_flat(), **_resolve_cfg(spec, c)} for c in cells])}
        search_alg = BasicVariantGenerator(max_concurrent=max_conc or 0)
        num_samples = 1
    else:
        # The URL without its password (public_uri): Ray pickles the searcher into the sweep folder.
        search_alg = make_searcher(spec, storage_url=settings.optuna_storage)
    scheduler = make_scheduler(spec)
    if hasattr(scheduler, "state_callback"):  # ASHA by promotion: its rungs survive `resume`
        callbacks = [*callbacks, scheduler.state_callback()]
    tune_config = tune.TuneConfig(
        search_alg=search_alg,
        scheduler=scheduler,
        num_samples=num_samples,
        max_concurrent_trials=max_conc,
        time_budget_s=spec.budget.time_budget_s,
        trial_dirname_creator=_short_trial_name,
        trial_name_creator=_short_trial_name,
        reuse_actors=True,  # trial overhead ~0.3 s instead of ~3 s: no new process + torch import per trial
    )
    run_config = tune.RunConfig(
        name=spec.name,
        storage_path=str(Path(settings.sweep_dir).parent),
        callbacks=callbacks,
        # PBT hands a trial's checkpoint to others later: keep more of them around (Ray warns at <= 2).
        # PBT exploits the donor's checkpoint of its last perturbation: keep at least that far back.
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=max(4, spec.budget.perturbation_interval + 2) if sched.population else 2),
        failure_config=tune.FailureConfig(max_failures=3),
        stop=StopOnVerdict(spec.name),  # the first trials all failed the same way (failfast.py)
        verbose=1,
    )
    return tune.Tuner(_trainable(spec, data), param_space=param_space, tune_config=tune_config, run_config=run_config)


def _resolve_cfg(spec: SweepSpec, cfg: dict[str, Any]) -> dict[str, Any]:
    out = dict(cfg)
    if "data.pretrain" in out:
        out["data.pretrain"] = spec.resolve_pretrain(out["data.pretrain"])
    return out


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
        tuner, settings = _start(spec, sweep_dir, data_obj, paths, tracking_uri, optuna_storage, num_samples)
    except BaseException:
        if created:  # a sweep that never started must not block its name
            shutil.rmtree(sweep_dir, ignore_errors=True)
        raise
    grid = tuner.fit()
    return _finish(spec, settings, grid)


def _start(spec: SweepSpec, sweep_dir: Path, data_obj: Any, paths: list[str], tracking_uri: str | None,
           optuna_storage: str | None, num_samples: int | None) -> tuple[Any, SweepSettings]:
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
        optuna_storage=public_uri(optuna_storage) if optuna_storage else None,
        num_samples=num_samples or spec.budget.trials, dataset_digests=preflight.dataset_digests(data_obj),
    )
    try:
        _log_sweep_inputs(client, settings, spec)
        _log_manifests(client, settings, data_obj)
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
    from ray import tune

    sweep_dir = resolve_sweep_dir(name_or_path, storage)
    settings = SweepSettings.load(sweep_dir)
    spec = parse_spec(_yaml(sweep_dir / "sweep.yaml"), base_dir=str(sweep_dir), source_text=(sweep_dir / "sweep.yaml").read_text())
    spec.name = settings.name
    data_obj = _open_data(settings.dataset_paths, str(sweep_dir), spec)
    from ecg_tune.tune.preflight import check_digests

    check_digests(settings.dataset_digests, data_obj, settings.name)
    _init_ray(address, spec)
    _snapshot_period(settings.num_samples)
    tuner = tune.Tuner.restore(
        str(sweep_dir), trainable=_trainable(spec, data_obj), resume_unfinished=True, resume_errored=True
    )
    grid = tuner.fit()
    return _finish(spec, settings, grid)


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


def _log_manifests(client: Any, settings: SweepSettings, data_obj: Any) -> None:
    import hashlib

    from mlflow.entities import RunTag

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
    from ecg_tune.tune.registry import register_best
    from ecg_tune.tune.tracking import end_orphans

    client = MlflowClient(settings.tracking_uri)
    board = leaderboard(grid, spec)
    errors = int(getattr(grid, "num_errors", 0))
    model_uri = None
    try:
        model_uri = register_best(client, settings, spec, board)
    except Exception as exc:  # registry problems must not lose the sweep's results
        log.warning("could not register the best encoder: %s", exc)
    # Every trial Ray knows has a folder trial_<id> (_short_trial_name), with or without results.
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

