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


def test_leaderboard_prints_short_unambiguous_names_and_unfolded_cells() -> None:
    import io

    import pandas as pd

    from ecg_tune.tune.sweep import print_leaderboard

    board = pd.DataFrame([
        {"trial_id": "c33a5644", "epochs": 3, "probe_auc": 0.90171, "linear.test_auc": 0.7091,
         "linear.test_ci_low": 0.6118, "linear.test_ci_high": 0.7984, "failure": "", "optim.lr": 0.0007957,
         "augment.pipeline": "random_resized_crop,timeout", "method.tau0": 0.9949, "swav.tau0": 0.5},
        {"trial_id": "b6e8d9ed", "epochs": 1, "probe_auc": 0.8879, "linear.test_auc": float("nan"),
         "linear.test_ci_low": float("nan"), "linear.test_ci_high": float("nan"), "failure": "",
         "optim.lr": 0.0004, "augment.pipeline": "timeout", "method.tau0": 0.99, "swav.tau0": 0.4},
    ])
    out = io.StringIO()
    print_leaderboard(board, "probe_auc", file=out)
    text = out.getvalue()
    lines = text.splitlines()
    header = next(line for line in lines if "trial" in line and "epochs" in line)
    assert " lr " in header and " pipeline " in header  # last parts where unique
    assert "method.tau0" in text and "swav.tau0" in text  # kept whole where they clash
    assert "c33a5644" in text and "0.709 [0.612, 0.798]" in text  # one line each, not folded
    assert "random_resized_crop, timeout" in text
    first = next(i for i, line in enumerate(lines) if "c33a5644" in line)
    assert "b6e8d9ed" in lines[first + 1]  # no wrapped continuation lines between rows


def test_a_second_different_postgres_password_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "first")
    with pytest.raises(ConfigError, match="PGPASSWORD is already set"):
        public_uri("postgresql://u:second@db/x")
    assert public_uri("postgresql://u:first@db/x") == "postgresql://u@db/x"


def test_leaderboard_without_confidence_intervals() -> None:
    import io

    import pandas as pd

    from ecg_tune.tune.sweep import print_leaderboard

    board = pd.DataFrame([{"trial_id": "t1", "epochs": 2, "probe_auc": 0.8, "linear.test_auc": 0.75, "failure": ""}])
    out = io.StringIO()
    print_leaderboard(board, "probe_auc", file=out)  # evaluation.bootstrap 0: no CI columns
    assert "0.750" in out.getvalue()
