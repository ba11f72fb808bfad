"""Checks a sweep makes before anything starts: no folder, no run, no Ray process exists yet.

Everything that can be known before the first trial is checked here, so that a sweep that cannot
run fails in a second with one line naming the key or flag, instead of after Ray started (where the
error used to hide behind Ray's retries) or after the sweep folder was written (which then blocked
the name): the sweep storage folder, the MLflow tracking server (a short timeout instead of a silent
hang), the Optuna storage, the objective (never a test-fold metric), and the data each trial will
see (batch size against the usable records, the label set).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ecg_tune.data.store import SignalStore
from ecg_tune.errors import ConfigError, DatasetError, EcgTuneError
from ecg_tune.tune.space_validate import _branch_configs
from ecg_tune.tune.spaces import (
    MAX_TRIALS,
    BranchParam,
    ChoiceParam,
    IntParam,
    SubsetParam,
    SweepSpec,
    check_objective,
)


def timeout_s() -> float:
    return float(os.environ.get("ECG_TUNE_CONNECT_TIMEOUT_S", "10"))


def check_storage_folder(root: str) -> None:
    """`--storage` must be (or be creatable as) a folder: not a file, nor below one."""
    path = Path(root)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                what = "is a file" if p == path else f"is below {p}, which is a file"
                raise ConfigError("--storage", f"{root}: {what}, not a folder; give a folder for the sweeps")
            if not os.access(p, os.W_OK | os.X_OK):
                raise ConfigError("--storage", f"{root}: {p} is not writable")
            return


def check_num_samples(n: int | None) -> None:
    if n is not None and not 1 <= n <= MAX_TRIALS:
        raise ConfigError("--num-samples", f"must be between 1 and {MAX_TRIALS}, got {n}")


def check_tracking_server(uri: str) -> None:
    """An http(s) MLflow server must answer within the connect timeout (MLflow itself retries a dead
    server for minutes, silently). Any HTTP answer (also 401/404) counts: the server is there."""
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s()):  # noqa: S310 (http(s) only, checked above)
            return
    except urllib.error.HTTPError:
        return
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EcgTuneError(
            f"--tracking-uri {uri}: the MLflow tracking server does not answer within {timeout_s():g} s ({reason}); "
            "start it (e.g. `mlflow server --host 0.0.0.0 --port 5000`) or check the address, or drop "
            "--tracking-uri to track into the sweep folder") from None


def check_optuna_storage(url: str) -> None:
    """Connect to the Optuna RDB (and create its tables) now, with a connect timeout."""
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("postgresql"):
        kwargs = {"connect_args": {"connect_timeout": max(1, int(timeout_s()))}}
    try:
        storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except Exception as exc:  # SQLAlchemy/driver errors of every kind: one line, no traceback
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise EcgTuneError(f"--optuna-storage {url}: cannot use this Optuna storage ({type(exc).__name__}: {first}); "
                           "check the URL, that the database runs and accepts this user (PGPASSWORD or ~/.pgpass), "
                           "or drop --optuna-storage") from None
    try:
        storage.engine.dispose()
    except Exception:  # pragma: no cover - nothing to release
        pass


# ------------------------------------------------------------------------------- data
_DATA_KEYS = ("data.pretrain", "data.downstream", "data.exclude_leakage", "data.max_pretrain_records", "data.leads",
              "data.window", "seed", "method.name", "data.label_set")


def _candidates(spec: SweepSpec) -> list[tuple[dict[str, Any], dict[str, str]]]:
    fixed = spec.fixed_flat()
    if spec.ablation is not None:
        where = {**{k: f"fixed.{k}" for k in spec.fixed}, **{k: f"ablation.baseline.{k}" for k in spec.ablation.baseline}}
        out = [({**fixed, **c}, dict(where)) for c in spec.ablation.grid()]
    else:
        fixed_paths = {k: f"fixed.{k}" for k in spec.fixed}
        out = [({**fixed, **flat}, {**fixed_paths, **paths}) for flat, paths in _branch_configs(spec.space, "space")]
    for flat, _ in out:  # corpus names (`cinc,chapman`) become the paths the sweep opened
        if flat.get("data.pretrain"):
            flat["data.pretrain"] = spec.resolve_pretrain(flat["data.pretrain"])
    return out


def _largest(nodes: list, key: str, found: list[tuple[int, str]], path: str = "space") -> None:
    for n in nodes:
        where = f"{path}.{n.key}"
        if n.key == key and isinstance(n, IntParam):
            found.append((int(n.high), where))
        elif n.key == key and isinstance(n, ChoiceParam):
            found += [(int(c), where) for c in n.choices if isinstance(c, int | float)]
        if isinstance(n, BranchParam | SubsetParam):
            kind = "branch" if isinstance(n, BranchParam) else "subset"
            for opt, sub in n.options.items():
                _largest(sub, key, found, f"{where}.{kind}.{opt}")


def check_data(spec: SweepSpec, datasets: dict[str, Any]) -> None:
    """Batch size against the usable pretraining records, and the label set of the downstream data."""
    from ecg_tune.config import TrialConfig
    from ecg_tune.data import open_dataset
    from ecg_tune.ssl.pretrain import prepare_data

    seen: set[tuple] = set()
    for flat, paths in _candidates(spec):
        cfg = TrialConfig.from_flat({k: v for k, v in flat.items() if not k.startswith("_")})
        if cfg.data.downstream:
            try:
                downstream = datasets.get(cfg.data.downstream) or open_dataset(cfg.data.downstream)
                downstream.label_set_name(cfg.data.label_set)
            except DatasetError as exc:
                raise ConfigError(paths.get("data.label_set", "data.label_set"), str(exc)) from None
        if cfg.train.steps_per_epoch:
            continue  # fixed-length epochs draw records with replacement: any batch size runs
        key = tuple(str(flat.get(k)) for k in _DATA_KEYS)
        sizes = [(cfg.train.batch_size, paths.get("train.batch_size", "train.batch_size"))]
        if spec.ablation is None:
            _largest(spec.space, "train.batch_size", sizes)
        if key in seen and len(sizes) == 1:
            continue
        seen.add(key)
        pool = prepare_data(cfg, open_fn=lambda p: datasets[p] if p in datasets else open_dataset(p))
        store = pool.store
        if isinstance(store, SignalStore):
            lengths = store.lengths[pool.indices]
            usable = len(lengths) if cfg.method.name == "cpc" else int((lengths >= cfg.data.window).sum())
        else:  # data.mode: stream reads no signal before training; its record count bounds the batch
            usable = store.n_records()
        batch, where = max(sizes)
        if batch > usable:
            raise ConfigError(where, f"{batch} is larger than the {usable} usable pretraining records of "
                                     f"{cfg.data.pretrain} (after the leakage guard, data.max_pretrain_records and "
                                     "records shorter than data.window): lower the batch size, or set "
                                     "train.steps_per_epoch")


def check_spec(spec: SweepSpec) -> None:
    """Checks of a spec that may have been built or changed in Python (not through parse_spec)."""
    check_objective(spec.objective.metric)




# ------------------------------------------------------------------------------- data digests
def dataset_digests(data_obj: Any) -> dict[str, str]:
    """path -> sha256 of the manifest.json of every dataset the sweep opened (the manifest lists every
    shard's sha256, so it pins the data: `resume` refuses data that changed since the sweep started)."""
    import hashlib

    out = {}
    for path, ds in data_obj.datasets.items():
        manifest = Path(getattr(ds, "path", "")) / "manifest.json"
        if manifest.is_file():
            out[path] = hashlib.sha256(manifest.read_bytes()).hexdigest()
    return out


def check_digests(saved: dict[str, str], data_obj: Any, sweep: str) -> None:
    now = dataset_digests(data_obj)
    for path, digest in saved.items():
        if path in now and now[path] != digest:
            raise DatasetError(
                f"{path}: this dataset changed since sweep {sweep!r} started (manifest sha256 {digest[:12]} then, "
                f"{now[path][:12]} now, e.g. another corpus prepared into its folder); resuming would mix trials "
                "trained on different data: restore the original data there, or start a new sweep")
