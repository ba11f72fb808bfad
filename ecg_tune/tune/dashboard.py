"""`ecg-tune dashboard SWEEP`: optuna-dashboard on a sweep's Optuna study, during the sweep and after.

Every sweep keeps its study in durable storage (`optuna.db` in the sweep folder, or the RDB given with
`--optuna-storage`: `SweepSettings.optuna_storage`), so the dashboard reads what the driver writes.
optuna-dashboard is an optional extra: `pip install 'ecg-tune[dashboard]'`.
"""

from __future__ import annotations

from typing import Any

from ecg_tune.errors import EcgTuneError


def storage_url(name_or_path: str, storage: str | None = None) -> tuple[str, str]:
    """(study storage URL, study name) of a sweep."""
    from ecg_tune.tune.sweep import SweepSettings, resolve_sweep_dir

    settings = SweepSettings.load(resolve_sweep_dir(name_or_path, storage))
    if not settings.optuna_storage:
        raise EcgTuneError(f"sweep {settings.name!r} kept its Optuna study in memory (it was started before "
                           "studies were durable): there is nothing for the dashboard to open")
    return settings.optuna_storage, settings.name


def serve(name_or_path: str, *, host: str = "127.0.0.1", port: int = 8080, storage: str | None = None,
          announce: Any = print) -> None:
    """Serve until interrupted."""
    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise EcgTuneError("optuna-dashboard is not installed: pip install 'ecg-tune[dashboard]'") from None
    import optuna

    url, name = storage_url(name_or_path, storage)
    rdb = optuna.storages.RDBStorage(url, skip_compatibility_check=True)
    announce(f"optuna-dashboard for study {name!r} ({url}) on http://{host}:{port}/  (Ctrl-C to stop)")
    run_server(rdb, host=host, port=port)
