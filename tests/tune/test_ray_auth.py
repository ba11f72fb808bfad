"""Token auth is meant when a token is given and RAY_AUTH_MODE is not: the sweep layer sets the mode
before Ray is imported (Ray reads it at import), and never overrides a mode the user set."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = "import ecg_tune.tune.sweep, os, ray; print(os.environ.get('RAY_AUTH_MODE'))"


def _mode(**env: str) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "ECG_TUNE_SET_RAY"))}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env}, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(("env", "expected"), [
    ({"RAY_AUTH_TOKEN": "t0ken"}, "token"),
    ({"RAY_AUTH_TOKEN_PATH": "/nonexistent/token"}, "token"),
    ({"RAY_AUTH_TOKEN": "t0ken", "RAY_AUTH_MODE": "disabled"}, "disabled"),
    ({}, "None"),
])
def test_auth_mode_follows_a_given_token_and_never_overrides_the_user(env: dict[str, str], expected: str) -> None:
    assert _mode(**env) == expected
