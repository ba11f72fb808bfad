"""The `ecg-tune` command line: one-line errors, and the single-run commands on real data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecg_tune.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_version_and_help() -> None:
    assert run("--version").stdout.strip() == __import__("ecg_tune").__version__
    assert "quickstart" in run("--help").stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("inspect", "/nonexistent/shards"), "/nonexistent/shards"),
        (("prepare", "ptbxl", "/nonexistent/ptbxl", "/tmp/ecg-tune-never"), "/nonexistent/ptbxl"),
        (("sweep", "/nonexistent/space.yaml"), "/nonexistent/space.yaml"),
        (("pretrain", "--data", "/x", "--method", "moco", "--out", "/tmp/ecg-tune-never"), "moco"),
        # evaluate: pretraining keys would be ignored silently, zero epochs would "select epoch 0" (#14 item 7)
        (("evaluate", "/x.ckpt", "--data", "/x", "--out", "/tmp/ecg-tune-never", "--set", "optim.lr=5"), "optim.lr"),
        (("evaluate", "/x.ckpt", "--data", "/x", "--out", "/tmp/ecg-tune-never", "--set", "train.epochs=0"), "train.epochs"),
        (("evaluate", "/x.ckpt", "--data", "/x", "--out", "/tmp/ecg-tune-never", "--set", "evaluation.linear_epochs=0"), "evaluation.linear_epochs"),
        (("evaluate", "/x.ckpt", "--data", "/x", "--out", "/tmp/ecg-tune-never", "--set", "evaluation.linear_lr=5"), "evaluation.linear_lr"),
        (("evaluate", "/x.ckpt", "--data", "/x", "--out", "/tmp/ecg-tune-never", "--set", "evaluation.curve_protocol=foo"), "curve_protocol"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(args: tuple[str, ...], needle: str) -> None:
    done = run(*args)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in done.stderr
    assert not Path("/tmp/ecg-tune-never").exists()


@pytest.mark.slow
def test_prepare_pretrain_evaluate_on_real_ptbxl(ptbxl_root: Path, tmp_path: Path) -> None:
    shards = tmp_path / "ptbxl"
    done = run("prepare", "ptbxl", str(ptbxl_root), str(shards), "--workers", "1")
    assert done.returncode == 0, done.stderr
    assert "500 in" in done.stdout and "quarantine 0" in done.stdout
    summary = json.loads(run("inspect", str(shards), "--json").stdout)
    assert summary["records"] == 500
    done = run("pretrain", "--data", str(shards), "--downstream", str(shards), "--method", "simclr",
               "--epochs", "1", "--batch-size", "64", "--set", "encoder.width=8", "--out", str(tmp_path / "run"),
               "--quiet")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "run" / "encoder.ckpt").is_file()
    done = run("evaluate", str(tmp_path / "run" / "encoder.ckpt"), "--data", str(shards), "--protocol", "linear",
               "--label-set", "superdiagnostic", "--set", "evaluation.linear_epochs=2",
               "--set", "evaluation.bootstrap=50", "--out", str(tmp_path / "eval"))
    assert done.returncode == 0, done.stderr
    result = json.loads(next((tmp_path / "eval").glob("*.json")).read_text())
    assert result["protocol"] == "linear" and result["n_classes"] == 5
    assert 0.0 <= result["test_auc"] <= 1.0 and "test macro AUC" in done.stdout
