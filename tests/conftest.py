"""Shared fixtures: paths to the real ECG samples in ../shared/data (skipped with a reason if absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ECG_TUNE_SHARED_DATA", REPO.parent / "shared" / "data"))


def _sample(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real ECG sample {path} is absent (set ECG_TUNE_SHARED_DATA to its folder)")
    return path


@pytest.fixture(scope="session")
def ptbxl_root() -> Path:
    return _sample("ptb-xl-sample")


@pytest.fixture(scope="session")
def cinc_root() -> Path:
    return _sample("cinc-sample")
