"""`ecg-tune pretrain --workers 2`: Ray Train's TorchTrainer with two gloo workers (slow: starts Ray)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ecg_tune.errors import ConfigError
from ecg_tune.tune.multiworker import WorkerResources, _absolute_paths

CLI = [sys.executable, "-m", "ecg_tune.cli"]


def test_worker_resources_are_validated() -> None:
    with pytest.raises(ConfigError, match="resources.workers"):
        WorkerResources(workers=0)
    with pytest.raises(ConfigError, match="gpu_per_worker"):
        WorkerResources(workers=2, gpu_per_worker=1.5)


def test_dataset_paths_become_absolute_for_remote_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    flat = _absolute_paths({"data.pretrain": "a,s3://b/c", "data.downstream": "d"})
    assert flat["data.pretrain"] == f"{tmp_path / 'a'},s3://b/c" and flat["data.downstream"] == str(tmp_path / "d")


@pytest.mark.slow
def test_pretrain_with_two_workers(tmp_path: Path) -> None:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    subprocess.run([*CLI, "synth", str(tmp_path / "syn"), "--records", "120", "--seed", "0"], check=True, env=env,
                   capture_output=True, timeout=300)
    out = tmp_path / "run"
    done = subprocess.run(
        [*CLI, "pretrain", "--data", str(tmp_path / "syn"), "--method", "simclr", "--set", "encoder.width=8",
         "--set", "train.steps_per_epoch=3", "--epochs", "2", "--batch-size", "16", "--workers", "2",
         "--out", str(out), "--quiet"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3.0, 6.0]  # one row per epoch, written once (rank 0)
    assert (out / "encoder.ckpt").is_file() and (out / "last.ckpt").is_file()


def test_more_than_one_gpu_per_trial_is_refused_not_left_idle() -> None:
    from tests.tune.conftest import spec_of

    with pytest.raises(ConfigError, match="all but one would idle") as info:
        spec_of({"resources": {"cpu": 1, "gpu": 2}})
    assert info.value.key == "resources.gpu"
    assert spec_of({"resources": {"cpu": 1, "gpu": 1}}).resources.gpu == 1
