"""Credentials in tracking and Optuna storage URLs: moved into the environment, never written anywhere."""

from __future__ import annotations

import os

from ecg_tune.errors import ConfigError


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
