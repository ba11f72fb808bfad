"""Credentials in tracking and Optuna URLs never reach a file: `sweep.public_uri`."""

from __future__ import annotations

import pytest

from ecg_tune.errors import ConfigError
from ecg_tune.tune.sweep import public_uri


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PGPASSWORD"):
        monkeypatch.delenv(var, raising=False)


def test_http_credentials_move_to_mlflow_variables() -> None:
    import os

    assert public_uri("https://ann:s%3Dcret@mlflow.internal:5000/x") == "https://mlflow.internal:5000/x"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "ann"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "s=cret"  # URL-quoted in the URL, plain in the header


def test_postgres_password_moves_to_pgpassword_user_stays() -> None:
    import os

    url = public_uri("postgresql+psycopg2://optuna:p%40ss@db.internal:5432/studies")
    assert url == "postgresql+psycopg2://optuna@db.internal:5432/studies"
    assert os.environ["PGPASSWORD"] == "p@ss"  # libpq reads it unquoted


def test_other_databases_refuse_a_password_and_plain_urls_pass() -> None:
    with pytest.raises(ConfigError, match="--optuna-storage"):
        public_uri("mysql://u:secret@db/x")
    assert public_uri("sqlite:////tmp/o.db") == "sqlite:////tmp/o.db"
    assert public_uri("postgresql://db.internal/studies") == "postgresql://db.internal/studies"


def test_storage_is_a_path_or_a_file_uri(tmp_path) -> None:
    from ecg_tune.tune.sweep import _storage_root

    assert _storage_root(tmp_path.as_uri()) == str(tmp_path.resolve())
    assert _storage_root(str(tmp_path / "a" / ".." / "b")) == str((tmp_path / "b").resolve())
    with pytest.raises(ConfigError, match="--storage.*s3://bucket/sweeps"):
        _storage_root("s3://bucket/sweeps")
