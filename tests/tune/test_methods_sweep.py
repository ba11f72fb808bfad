"""`ecg-tune sweep search_spaces/methods.yaml` end to end on synthetic shards, at a smoke budget (#16).

The sweep CLI has `--data` (one shard folder for pretraining and downstream) but no way to shrink a
space's compute from outside, so the test writes a reduced copy of methods.yaml with `smoke_copy`:
its `name`, `objective`, `fixed` keys and every ablation cell (baseline, factor levels with their
method, encoder, encoder size and learning rate) are kept as written; only the budget (1 epoch of 2
steps, 1 seed, 1 CPU per trial, no GPU), the evaluation lengths and each encoder's width/depth are
reduced (the baseline's xresnet1d50, which the cells inherit from, keeps its width). Every method x encoder cell of the space then trains, is probed, runs linear and finetune
evaluation, and the best one is registered; its TorchScript embedder must load with
`mlflow.pytorch.load_model` and embed raw (batch, 12, time) ECGs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ecg_tune.tune.spaces import Ablation

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
METHODS = REPO / "search_spaces" / "methods.yaml"
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1", "RAY_DEDUP_LOGS": "0"}

# Compute-only keys for every cell; nothing here changes which objective or encoder a cell runs.
SMOKE_FIXED = {
    "train.batch_size": 16, "train.steps_per_epoch": 2, "optim.warmup_epochs": 0,
    "evaluation.probe_every": 1, "evaluation.probe_epochs": 1, "evaluation.linear_epochs": 1,
    "evaluation.finetune_head_epochs": 1, "evaluation.finetune_epochs": 1, "evaluation.min_steps_per_epoch": 1,
    "evaluation.bootstrap": 20, "evaluation.batch_size": 64, "data.eval_stride": 250,
}
# Per encoder: a narrower/shallower copy of the same architecture (the cell's own size is kept).
SMOKE_ENCODER = {
    "xresnet1d50": {"encoder.width": 8},  # only where a level names it (e.g. cmsc)
    "cpc_fc": {"encoder.hidden": 32, "encoder.local_layers": 2},
    "s4d": {"encoder.d_model": 32, "encoder.layers": 1, "encoder.local_layers": 1},
    "vit1d": {"encoder.depth": 1, "encoder.patch_size": 25},  # 10 patches per lead instead of 25
}


def smoke_copy(space: Path, out: Path) -> tuple[Path, list[str]]:
    """A reduced copy of a search space with the same ablation cells; returns its path and cell names."""
    doc: dict[str, Any] = yaml.safe_load(space.read_text())
    doc["budget"] = {"trials": 1, "max_epochs": 1, "grace_period": 1, "max_concurrent": 2}
    doc["resources"] = {"cpu": 1}
    doc["fixed"] = {**doc["fixed"], **SMOKE_FIXED}
    ablation = doc["ablation"]
    ablation["seeds"] = ablation["seeds"][:1]
    # Cells inherit the baseline's keys, so the baseline encoder (xresnet1d50) keeps its width: a
    # `encoder.width` there would reach the cells of other encoders, which have no such parameter.
    for levels in ablation["factors"].values():
        for level in levels:
            if "encoder.name" in level:
                level.update(SMOKE_ENCODER[level["encoder.name"]])
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    cells = [name for name, _ in Ablation(ablation["baseline"], ablation["factors"], ablation.get("design", "one_at_a_time")).cells()]
    return out, cells


def test_smoke_copy_keeps_every_cell(tmp_path: Path) -> None:
    original = yaml.safe_load(METHODS.read_text())["ablation"]
    _, cells = smoke_copy(METHODS, tmp_path / "methods.yaml")
    reduced = yaml.safe_load((tmp_path / "methods.yaml").read_text())["ablation"]
    assert cells == [name for name, _ in Ablation(original["baseline"], original["factors"]).cells()]
    for before, after in zip(original["factors"]["method"], reduced["factors"]["method"]):
        assert {k: after[k] for k in before} == before  # method, encoder, size, lr as written
    assert {"mae", "jepa", "cmsc", "cpc"} <= {lvl["method.name"] for lvl in reduced["factors"]["method"]}


def test_methods_space_sweeps_end_to_end(tmp_path: Path, small_shards: Path) -> None:
    space, cells = smoke_copy(METHODS, tmp_path / "methods.yaml")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ecg_tune.cli", "sweep", str(space), "--data", str(small_shards),
         "--storage", str(tmp_path / "sweeps")],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=540)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    assert proc.returncode == 0, out[-6000:]

    from mlflow.tracking import MlflowClient

    sweep_dir = tmp_path / "sweeps" / "methods"
    settings = json.loads((sweep_dir / "ecg_tune_sweep.json").read_text())
    client = MlflowClient(settings["tracking_uri"])
    runs = client.search_runs([settings["experiment_id"]], max_results=1000)
    trials = [r for r in runs if r.data.tags.get("ecg_tune.role") == "trial"]
    assert len(trials) == len(cells) and all(r.info.status == "FINISHED" for r in trials)
    ran = {(r.data.params["method.name"], r.data.params["encoder.name"]) for r in trials}
    assert {("mae", "vit1d"), ("jepa", "vit1d"), ("cmsc", "xresnet1d50"), ("cpc", "s4d"), ("cpc", "cpc_fc")} <= ran
    for run in trials:
        m = run.data.metrics
        assert 0.0 <= m["probe_auc"] <= 1.0
        assert 0.0 <= m["linear.test_auc"] <= 1.0 and 0.0 <= m["finetune.test_auc"] <= 1.0

    import mlflow
    import numpy as np
    import torch

    mlflow.set_tracking_uri(settings["tracking_uri"])
    model = mlflow.pytorch.load_model("models:/methods-encoder/1")
    ecg = np.random.default_rng(0).normal(scale=0.3, size=(3, 12, 1000)).astype(np.float32)
    with torch.no_grad():
        features = model(torch.from_numpy(ecg))
    # The version comes from the best trial's own run; the version's tags and the sweep run say which.
    version = client.get_model_version("methods-encoder", "1")
    assert client.get_run(version.run_id).data.tags.get("ecg_tune.role") == "trial"
    assert version.tags["trial"] == client.get_run(version.run_id).data.tags["ecg_tune.trial_id"]
    assert client.get_run(settings["parent_run_id"]).data.tags["ecg_tune.best_trial"] == version.tags["trial"]
    assert str(client.get_model_version_by_alias("methods-encoder", "champion").version) == "1"
    assert features.ndim == 2 and features.shape[0] == 3 and features.shape[1] > 0
    assert torch.isfinite(features).all()
    assert "best encoder" in out
