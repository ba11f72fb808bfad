"""`ecg-tune report` on MLflow stores built by hand with the tracking layout of a sweep.

Two sweeps share one module-scoped build: a search sweep (branch/float/choice/subset space, complete,
ASHA-stopped, diverged, errored and still-running trials, protocol and curve metrics with JSON
artifacts) and an ablation sweep (3 cells × 3 seeds, one cell left with a single complete seed).
Every number of the report is checked against values read back from MLflow and recomputed here with
numpy / scipy.stats.
"""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from rich.console import Console
from scipy import stats

from ecg_tune.errors import EcgTuneError
from ecg_tune.tune.report import OUTPUTS, build_report
from ecg_tune.tune.report.data import open_sweep
from ecg_tune.tune.report.importance import distributions, trial_params
from ecg_tune.tune.report.paper import PUBLISHED
from ecg_tune.tune.report.stats import summarize, welch
from ecg_tune.tune.sweep import SweepSettings

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PAIRED_RESAMPLES = 300

SEARCH_YAML = textwrap.dedent("""\
    name: search
    data: {pretrain: [/d], downstream: /d}
    objective: {metric: probe_auc, mode: max}
    budget: {trials: 9, max_epochs: 4}
    fixed: {encoder.name: xresnet1d50, evaluation.protocols: "linear,finetune,label-efficiency,noise"}
    space:
      method.name:
        branch:
          simclr: {method.temperature: {float: [0.1, 1.0], log: true}}
          byol: {method.tau0: {float: [0.99, 0.999]}}
      optim.lr: {float: [1.0e-4, 1.0e-2], log: true}
      train.batch_size: {choice: [64, 128]}
      augment.pipeline:
        subset:
          random_resized_crop: {augment.random_resized_crop.min_fraction: {float: [0.3, 0.8]}}
          timeout: {}
        min_size: 1
    """)

ABLATION_YAML = textwrap.dedent("""\
    name: abl
    data: {pretrain: [/d], downstream: /d}
    objective: {metric: probe_auc, mode: max}
    budget: {max_epochs: 3}
    scheduler: fifo
    fixed: {encoder.name: xresnet1d50, evaluation.protocols: "linear,finetune,supervised,random"}
    ablation:
      baseline: {method.name: simclr, augment.pipeline: "random_resized_crop,timeout"}
      factors:
        method:
          - {name: byol, method.name: byol}
        augment.pipeline: [timeout]
      seeds: [0, 1, 2]
    """)


@dataclass
class FakeTrial:
    trial_id: str
    params: dict[str, Any]
    state: str | None  # ecg_tune.state tag (None: still running)
    status: str  # MLflow run status
    epochs: int
    probe: list[float] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)
    jsons: dict[str, dict] = field(default_factory=dict)
    cell: str | None = None
    failure: str = ""
    complete: bool = False
    npz: dict[str, dict] = field(default_factory=dict)  # protocol -> per-record test scores


def protocol_json(protocol: str, val: float, test: float, ci: tuple[float, float]) -> dict:
    return {"protocol": protocol, "label_set": "all", "n_classes": 5, "val_auc": val, "test_auc": test,
            "test_ci": list(ci), "per_class": {"NORM": test}, "selected_epoch": 3,
            "history": [{"epoch": 1, "phase": "head", "train_loss": 0.5, "val_auc": val}], "settings": {},
            "n_train": 100, "n_val": 20, "n_test": 20}


CODES = ["NORM", "MI", "STTC", "HYP"]  # HYP: no positive in the test fold (absent)
N_TEST = 60


def extended(data: dict, rng: np.random.Generator, *, warn: bool = False) -> dict:
    """The fields of the issue-14 result contract: AUPRC, present-class AUROC, absent classes, warnings."""
    data.update({"test_auprc": rng.uniform(0.3, 0.7), "test_auc_present": rng.uniform(0.7, 0.95), "absent_classes": ["HYP"],
                 "per_class": {c: (0.5 if c == "HYP" else rng.uniform(0.6, 1.0)) for c in CODES},
                 "per_class_auprc": {c: (None if c == "HYP" else rng.uniform(0.2, 0.9)) for c in CODES},
                 "warnings": ["test CI lies below 0.5"] if warn else []})
    return data


def scores_npz(seed: int, noise: float, *, reverse: bool = False) -> dict:
    """Per-record test scores of one trial: the same records and labels for every trial, scores = labels + noise."""
    targets = (np.random.default_rng(99).random((N_TEST, len(CODES))) < 0.35).astype(np.uint8)
    targets[:, CODES.index("HYP")] = 0
    scores = (targets + np.random.default_rng(seed).normal(0, noise, targets.shape)).astype(np.float32)
    ids = np.array([f"r{i:03d}" for i in range(N_TEST)])
    order = np.arange(N_TEST)[::-1] if reverse else np.arange(N_TEST)  # stored in another order: aligned by id
    return {"record_ids": ids[order], "scores": scores[order], "targets": targets[order], "codes": np.array(CODES)}


def curve_json(protocol: str, xs: list, tests: list[float], rng: np.random.Generator) -> dict:
    points = [{"x": x, "val_auc": t, "test_auc": t, "test_ci": [t - rng.uniform(0.01, 0.03), t + rng.uniform(0.01, 0.03)],
               "n_train": 10, "selected_epoch": None, "per_class": {}} for x, t in zip(xs, tests)]
    return {"protocol": protocol, "label_set": "all", "n_classes": 5,
            "x_name": "train_fraction" if protocol == "label-efficiency" else "noise_level", "points": points,
            "settings": {}, "n_val": 20, "n_test": 20}


def with_protocols(t: FakeTrial, rng: np.random.Generator, protocols: list[str], *, ci_metrics: bool = True) -> None:
    for p in protocols:
        val, test = rng.uniform(0.7, 0.95), rng.uniform(0.7, 0.95)
        ci = (test - rng.uniform(0.01, 0.03), test + rng.uniform(0.01, 0.03))
        t.final.update({f"{p}.val_auc": val, f"{p}.test_auc": test})
        if ci_metrics:
            t.final.update({f"{p}.test_ci_low": ci[0], f"{p}.test_ci_high": ci[1]})
        t.jsons[p] = protocol_json(p, val, test, ci)


def with_curves(t: FakeTrial, rng: np.random.Generator) -> None:
    for protocol, xs in (("label-efficiency", [0.1, 0.5, 1.0]), ("noise", ["L0", "L1", "L2", "L10"])):
        tests = list(rng.uniform(0.6, 0.9, len(xs)))
        t.final.update({f"{protocol}.{x}.test_auc": v for x, v in zip(xs, tests)})
        t.jsons[protocol] = curve_json(protocol, xs, tests, rng)


def done(trial_id: str, params: dict, epochs: int, rng: np.random.Generator, **kw: Any) -> FakeTrial:
    probe = list(np.sort(rng.uniform(0.5, 0.9, epochs)))
    return FakeTrial(trial_id, params, "finished", "FINISHED", epochs, probe, complete=True, **kw)


def search_trials(rng: np.random.Generator) -> list[FakeTrial]:
    configs = [
        {"method.name": "simclr", "method.temperature": 0.5, "optim.lr": 0.001, "train.batch_size": 64, "augment.pipeline": "random_resized_crop,timeout", "augment.random_resized_crop.min_fraction": 0.5},
        {"method.name": "byol", "method.tau0": 0.995, "optim.lr": 0.003, "train.batch_size": 128, "augment.pipeline": "timeout"},
        {"method.name": "simclr", "method.temperature": 0.2, "optim.lr": 0.0003, "train.batch_size": 128, "augment.pipeline": "random_resized_crop", "augment.random_resized_crop.min_fraction": 0.7},
        {"method.name": "byol", "method.tau0": 0.99, "optim.lr": 0.0002, "train.batch_size": 64, "augment.pipeline": "random_resized_crop,timeout", "augment.random_resized_crop.min_fraction": 0.4},
        {"method.name": "simclr", "method.temperature": 0.9, "optim.lr": 0.008, "train.batch_size": 64, "augment.pipeline": "timeout"},
    ]
    fixed = {"encoder.name": "xresnet1d50", "encoder.width": 16, "seed": 0, "train.epochs": 4,
             "data.pretrain": "/data/ptbxl-100hz"}
    trials = []
    for i, cfg in enumerate(configs):
        t = done(f"t{i}", {**fixed, **cfg}, 4, rng)
        with_protocols(t, rng, ["linear", "finetune"])
        if i < 2:
            with_curves(t, rng)
        trials.append(t)
    # ASHA-stopped after 2 epochs with a probe above every full-budget trial: never ranked above them
    stopped = FakeTrial("t5", {**fixed, **configs[0], "optim.lr": 0.009}, "finished", "FINISHED", 2, [0.95, 0.97])
    diverged = FakeTrial("t6", {**fixed, **configs[1], "optim.lr": 0.01}, "diverged", "FAILED", 2, [0.5, 0.0],
                         failure="TrainingDiverged: loss is nan at epoch 2")
    error = FakeTrial("t7", {**fixed, **configs[2]}, "error", "FAILED", 0, failure="Traceback: CUDA out of memory")
    running = FakeTrial("t8", {**fixed, **configs[3], "optim.lr": 0.004}, None, "RUNNING", 1, [0.61])
    return trials + [stopped, diverged, error, running]


def ablation_trials(rng: np.random.Generator) -> list[FakeTrial]:
    base = {"encoder.name": "xresnet1d50", "train.epochs": 3}
    cells = {"baseline": {"method.name": "simclr", "augment.pipeline": "random_resized_crop,timeout"},
             "byol": {"method.name": "byol", "augment.pipeline": "random_resized_crop,timeout"},
             "augment.pipeline=timeout": {"method.name": "simclr", "augment.pipeline": "timeout"}}
    trials = []
    for cell, over in cells.items():
        for seed in (0, 1, 2):
            tid = f"{cell[:4]}-{seed}"
            params = {**base, **over, "seed": seed}
            if cell == "augment.pipeline=timeout" and seed > 0:  # two diverged seeds: one complete seed left
                trials.append(FakeTrial(tid, params, "diverged", "FAILED", 1, [0.0], cell=cell, failure="nan loss"))
                continue
            t = done(tid, params, 3, rng, cell=cell)
            with_protocols(t, rng, ["linear"])
            # finetune without CI metrics: the report must take the CI from the JSON artifact
            with_protocols(t, rng, ["finetune"], ci_metrics=cell != "augment.pipeline=timeout")
            if cell == "baseline":
                with_protocols(t, rng, ["supervised", "random"])
            with_curves(t, rng)
            for p in ("linear", "finetune", "supervised", "random"):
                if p in t.jsons:
                    extended(t.jsons[p], rng, warn=(tid == "base-1" and p == "linear"))
            # byol separates the classes better than the baseline; the timeout cell like the baseline
            noise = 0.4 if cell == "byol" else 1.0
            for p in ("linear", "finetune"):
                t.npz[p] = scores_npz(1000 * seed + len(cell) + (p == "finetune"), noise, reverse=cell == "byol")
            trials.append(t)
    return trials


def build_store(root: Path, name: str, yaml_text: str | None, trials: list[FakeTrial]) -> SweepSettings:
    """A sweep folder `root/name` whose settings point at the shared store `root/mlflow.db` (creating
    a sqlite store's schema costs seconds; experiments keep the sweeps apart, as on a server)."""
    sweep_dir = root / name
    sweep_dir.mkdir(parents=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment(name, artifact_location=(sweep_dir / "mlartifacts").as_uri())
    parent = client.create_run(exp, run_name=f"sweep:{name}", tags={"ecg_tune.role": "sweep", "ecg_tune.sweep": name}).info.run_id
    client.log_batch(parent, params=[Param("sweep.name", name), Param("sweep.objective", "probe_auc"),
                                     Param("sweep.scheduler", "asha"), Param("version.python", "3.12")])
    if yaml_text is not None:
        (sweep_dir / "sweep.yaml").write_text(yaml_text)
        client.log_artifact(parent, str(sweep_dir / "sweep.yaml"))
    for t in trials:
        tags = {"mlflow.parentRunId": parent, "mlflow.runName": t.trial_id, "ecg_tune.role": "trial",
                "ecg_tune.trial_id": t.trial_id, "ecg_tune.sweep": name}
        if t.cell:
            tags["ecg_tune.cell"] = t.cell
        run = client.create_run(exp, tags=tags).info.run_id
        client.log_batch(run, params=[Param(k, str(v)) for k, v in sorted(t.params.items())])
        metrics = []
        for epoch, probe in enumerate(t.probe, start=1):
            metrics += [Metric("probe_auc", probe, epoch, epoch), Metric("loss", 2.0 / epoch + probe, epoch, epoch),
                        Metric("epoch", epoch, epoch, epoch)]
        if t.complete:
            metrics.append(Metric("budget_complete", 1.0, t.epochs, t.epochs))
            metrics += [Metric(k, v, t.epochs, t.epochs) for k, v in t.final.items()]
        if metrics:
            client.log_batch(run, metrics=metrics)
        run_tags = []
        if t.state:
            run_tags.append(RunTag("ecg_tune.state", t.state))
        if t.failure:
            run_tags.append(RunTag("ecg_tune.failure_reason", t.failure))
        if run_tags:
            client.log_batch(run, tags=run_tags)
        if t.jsons:
            results = sweep_dir / "results" / t.trial_id
            results.mkdir(parents=True)
            (results / "encoder.ckpt").write_bytes(b"not a real checkpoint")
            for p, data in t.jsons.items():
                (results / f"{p}.json").write_text(json.dumps(data))
            for p, arrays in t.npz.items():
                np.savez(results / f"{p}.scores.npz", **arrays)
            client.log_artifacts(run, str(results), artifact_path="results")
        if t.status != "RUNNING":
            client.set_terminated(run, status=t.status)
    settings = SweepSettings(name=name, sweep_dir=str(sweep_dir), tracking_uri=uri, experiment_id=exp,
                             parent_run_id=parent, dataset_paths=["/d"])
    settings.save()
    return settings


@dataclass
class Built:
    settings: SweepSettings
    index: Path
    out: Path
    terminal: str
    trials: list[FakeTrial]

    def csv(self, name: str) -> pd.DataFrame:
        return pd.read_csv(self.out / name)

    def runs(self) -> dict[str, Any]:
        """trial_id → MLflow run, read back independently of the report code."""
        client = MlflowClient(self.settings.tracking_uri)
        runs = client.search_runs([self.settings.experiment_id], "tags.`ecg_tune.role` = 'trial'", max_results=1000)
        return {r.data.tags["ecg_tune.trial_id"]: r for r in runs}


def _build(root: Path, name: str, yaml_text: str, trials: list[FakeTrial]) -> Built:
    settings = build_store(root, name, yaml_text, trials)
    buffer = io.StringIO()
    index = build_report(settings.sweep_dir, console=Console(file=buffer, width=250), paired_resamples=PAIRED_RESAMPLES)
    return Built(settings, index, index.parent, buffer.getvalue(), trials)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sweeps")


@pytest.fixture(scope="module")
def search(root: Path) -> Built:
    return _build(root, "search", SEARCH_YAML, search_trials(np.random.default_rng(1)))


@pytest.fixture(scope="module")
def ablation(root: Path) -> Built:
    return _build(root, "abl", ABLATION_YAML, ablation_trials(np.random.default_rng(2)))


def t_interval(values: np.ndarray) -> tuple[float, float]:
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return values.mean() - half, values.mean() + half


# ---------------------------------------------------------------- leaderboard
def test_leaderboard_objective_values_and_order_equal_mlflow(search: Built) -> None:
    board = search.csv("leaderboard.csv")
    runs = search.runs()
    assert set(board["trial_id"]) == set(runs) == {f"t{i}" for i in range(9)}
    for row in board.itertuples():
        mlflow_value = runs[row.trial_id].data.metrics.get("probe_auc", math.nan)
        assert (math.isnan(row.probe_auc) and math.isnan(mlflow_value)) or row.probe_auc == pytest.approx(mlflow_value, abs=1e-12)
    # Finished trials first, best objective first; running / failed ones unranked at the bottom.
    ranked = board[board["rank"].notna()]
    assert list(ranked["rank"]) == list(range(1, len(ranked) + 1))
    assert set(ranked["trial_id"]) == {"t0", "t1", "t2", "t3", "t4", "t5"}
    # Full-budget trials first by objective, then the ASHA-stopped t5 although its probe is the highest.
    full = ranked[ranked["budget_complete"]]
    assert list(ranked["trial_id"])[-1] == "t5" and len(full) == 5
    assert runs["t5"].data.metrics["probe_auc"] > max(full["probe_auc"])
    assert list(full["probe_auc"]) == sorted(full["probe_auc"], reverse=True)
    best_id = max(("t0", "t1", "t2", "t3", "t4"), key=lambda t: runs[t].data.metrics["probe_auc"])
    assert list(board.loc[board["best"], "trial_id"]) == [best_id] == [ranked["trial_id"].iloc[0]]
    summary = json.loads((search.out / "summary.json").read_text())
    assert summary["best"]["trial_id"] == best_id and summary["best"]["budget_complete"] is True
    assert summary["best"]["epochs"] == 4
    unranked = board[board["rank"].isna()]
    assert set(unranked["trial_id"]) == {"t6", "t7", "t8"}
    states = dict(zip(board["trial_id"], board["state"]))
    assert (states["t6"], states["t7"], states["t8"]) == ("diverged", "error", "running")
    assert board.set_index("trial_id").loc["t6", "failure"].startswith("TrainingDiverged")
    complete = dict(zip(board["trial_id"], board["budget_complete"]))
    assert complete["t0"] and not complete["t5"]


def test_leaderboard_shows_only_varying_params_and_final_metrics(search: Built) -> None:
    board = search.csv("leaderboard.csv")
    assert {"method.name", "optim.lr", "train.batch_size", "augment.pipeline", "method.temperature"} <= set(board.columns)
    assert "encoder.name" not in board.columns and "seed" not in board.columns  # same in every trial
    runs = search.runs()
    for row in board.itertuples():
        metrics = runs[row.trial_id].data.metrics
        for key in ("linear.test_auc", "finetune.val_auc", "linear.test_ci_low"):
            value = board.set_index("trial_id").loc[row.trial_id, key]
            assert (math.isnan(value) and key not in metrics) or value == pytest.approx(metrics[key])
        assert board.set_index("trial_id").loc[row.trial_id, "optim.lr"] == pytest.approx(float(runs[row.trial_id].data.params["optim.lr"]))


def test_terminal_table_is_printed(search: Built) -> None:
    assert "leaderboard" in search.terminal
    best = search.csv("leaderboard.csv").iloc[0]
    assert best["trial_id"] in search.terminal
    assert f"{best['probe_auc']:.4f}" in search.terminal
    line = next(line for line in search.terminal.splitlines() if " t5 " in line)
    assert "2 (stopped)" in line


def test_html_marks_the_best_trial_and_stopped_epochs(search: Built) -> None:
    text = search.index.read_text()
    assert "2 (stopped)" in text and "<td>★</td>" in text and "full epoch budget" in text


# ---------------------------------------------------------------- ablation
def _cell_values(built: Built, cell: str, metric: str) -> np.ndarray:
    runs = [r for r in built.runs().values() if r.data.tags.get("ecg_tune.cell") == cell
            and r.data.tags.get("ecg_tune.state") == "finished" and r.data.metrics.get("budget_complete") == 1.0]
    return np.array([r.data.metrics[metric] for r in runs if metric in r.data.metrics])


def test_ablation_means_and_t_intervals_recomputed(ablation: Built) -> None:
    table = ablation.csv("ablation.csv")
    assert list(dict.fromkeys(table["cell"])) == ["baseline", "byol", "augment.pipeline=timeout"]
    assert {"probe_auc", "linear.test_auc", "linear.val_auc", "finetune.test_auc", "supervised.test_auc", "random.test_auc"} <= set(table["metric"])
    for cell in ("baseline", "byol"):
        for metric in ("probe_auc", "linear.test_auc", "finetune.test_auc"):
            row = table[(table["cell"] == cell) & (table["metric"] == metric)].iloc[0]
            values = _cell_values(ablation, cell, metric)
            assert row["n"] == len(values) == 3
            assert row["mean"] == pytest.approx(values.mean(), abs=1e-12)
            low, high = t_interval(values)
            assert (row["ci_low"], row["ci_high"]) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
            assert row["ci_kind"] == "t"


def test_ablation_difference_to_baseline_is_welch(ablation: Built) -> None:
    table = ablation.csv("ablation.csv")
    for metric in ("probe_auc", "linear.test_auc"):
        a, b = _cell_values(ablation, "byol", metric), _cell_values(ablation, "baseline", metric)
        va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
        se = math.sqrt(va + vb)
        df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
        diff = a.mean() - b.mean()
        half = stats.t.ppf(0.975, df) * se
        p = 2 * stats.t.sf(abs(diff) / se, df)
        row = table[(table["cell"] == "byol") & (table["metric"] == metric)].iloc[0]
        assert row["diff"] == pytest.approx(diff, abs=1e-12)
        assert row["diff_ci_low"] == pytest.approx(diff - half, abs=1e-10)
        assert row["diff_ci_high"] == pytest.approx(diff + half, abs=1e-10)
        assert row["p_value"] == pytest.approx(p, rel=1e-9)
        assert bool(row["significant"]) == (p < 0.05)
    baseline = table[table["cell"] == "baseline"]
    assert baseline["diff"].isna().all() and not baseline["significant"].any()


def test_ablation_single_seed_cell_uses_bootstrap_ci(ablation: Built) -> None:
    table = ablation.csv("ablation.csv").set_index(["cell", "metric"])
    cell = "augment.pipeline=timeout"
    run = next(r for r in ablation.runs().values() if r.data.tags.get("ecg_tune.cell") == cell and r.data.tags["ecg_tune.state"] == "finished")
    linear = table.loc[(cell, "linear.test_auc")]
    assert linear["n"] == 1 and linear["n_failed"] == 2 and linear["ci_kind"] == "bootstrap"
    assert linear["mean"] == pytest.approx(run.data.metrics["linear.test_auc"])
    assert (linear["ci_low"], linear["ci_high"]) == (pytest.approx(run.data.metrics["linear.test_ci_low"]), pytest.approx(run.data.metrics["linear.test_ci_high"]))
    # no CI metrics logged for finetune: the CI comes from results/finetune.json
    fake = next(t for t in ablation.trials if t.trial_id == run.data.tags["ecg_tune.trial_id"])
    finetune = table.loc[(cell, "finetune.test_auc")]
    assert finetune["ci_kind"] == "bootstrap"
    assert [finetune["ci_low"], finetune["ci_high"]] == pytest.approx(fake.jsons["finetune"]["test_ci"])
    probe = table.loc[(cell, "probe_auc")]  # no bootstrap CI exists for the probe objective
    assert probe["n"] == 1 and math.isnan(probe["ci_low"]) and math.isnan(probe["diff_ci_low"])


def test_ablation_leaderboard_has_cells(ablation: Built) -> None:
    board = ablation.csv("leaderboard.csv")
    assert "cell" in board.columns and "seed" in board.columns
    assert (board["cell"] == "baseline").sum() == 3


# ---------------------------------------------------------------- paper table and curves
def test_paper_table_best_trial_per_method_next_to_published(search: Built) -> None:
    paper = search.csv("paper_table.csv").set_index("row")
    runs = search.runs()
    for method, key in (("simclr", "simclr/xresnet1d50"), ("byol", "byol/xresnet1d50")):
        candidates = [r for r in runs.values() if r.data.params.get("method.name") == method and r.data.metrics.get("budget_complete") == 1.0]
        best = max(candidates, key=lambda r: r.data.metrics["probe_auc"])
        row = paper.loc[f"{method} (xresnet1d50)"]
        assert row["group"] == best.data.tags["ecg_tune.trial_id"]
        m = best.data.metrics
        assert row["linear_test_auc"] == pytest.approx(m["linear.test_auc"])
        assert (row["finetune_ci_low"], row["finetune_ci_high"]) == (pytest.approx(m["finetune.test_ci_low"]), pytest.approx(m["finetune.test_ci_high"]))
        assert (row["published_linear"], row["published_finetune"]) == (PUBLISHED[key].linear, PUBLISHED[key].finetune)
        assert row["delta_linear"] == pytest.approx(m["linear.test_auc"] - PUBLISHED[key].linear)
    published_only = [r for r in paper.index if r.startswith("published only")]
    assert any("CPC on All without PTB-XL" in r for r in published_only)
    assert PUBLISHED["simclr/xresnet1d50"].linear == 0.883 and PUBLISHED["cpc/cpc_fc"].finetune == 0.942


def test_paper_table_ablation_rows_aggregate_seeds(ablation: Built) -> None:
    paper = ablation.csv("paper_table.csv").set_index("row")
    row = paper.loc["simclr (xresnet1d50)"]
    # the simclr cell with the best mean objective over its complete seeds
    simclr_cells = {c: _cell_values(ablation, c, "probe_auc").mean() for c in ("baseline", "augment.pipeline=timeout")}
    assert row["group"] == max(simclr_cells, key=simclr_cells.get)
    values = _cell_values(ablation, row["group"], "linear.test_auc")
    assert row["n"] == len(values) and row["linear_test_auc"] == pytest.approx(values.mean())
    supervised = paper.loc["supervised baselines (xresnet1d50)"]
    finetune, linear = _cell_values(ablation, "baseline", "supervised.test_auc"), _cell_values(ablation, "baseline", "random.test_auc")
    assert supervised["finetune_test_auc"] == pytest.approx(finetune.mean())
    assert supervised["linear_test_auc"] == pytest.approx(linear.mean())
    assert supervised["linear_ci_low"] == pytest.approx(t_interval(linear)[0])
    assert supervised["published_finetune"] == 0.924 and supervised["published_linear"] == 0.721


def test_curve_tables_equal_metrics_and_json_cis(search: Built) -> None:
    runs = search.runs()
    fakes = {t.trial_id: t for t in search.trials}
    for name, protocol, xs in (("label_efficiency.csv", "label-efficiency", ["0.1", "0.5", "1.0"]), ("noise.csv", "noise", ["L0", "L1", "L2", "L10"])):
        table = search.csv(name).astype({"x": str})
        assert set(table["group"]) == {"t0", "t1"}
        for group, part in table.groupby("group"):
            assert list(part["x"]) == xs  # numeric / natural order (L10 after L2)
            for row in part.itertuples():
                assert row.test_auc == pytest.approx(runs[group].data.metrics[f"{protocol}.{row.x}.test_auc"])
                point = next(p for p in fakes[group].jsons[protocol]["points"] if str(p["x"]) == row.x)
                assert [row.ci_low, row.ci_high] == pytest.approx(point["test_ci"])


def test_ablation_curves_average_cells(ablation: Built) -> None:
    table = ablation.csv("noise.csv")
    row = table[(table["group"] == "byol") & (table["x"] == "L1")].iloc[0]
    values = _cell_values(ablation, "byol", "noise.L1.test_auc")
    assert row["n"] == 3 and row["test_auc"] == pytest.approx(values.mean())
    assert row["ci_low"] == pytest.approx(t_interval(values)[0])


# ---------------------------------------------------------------- importance
def test_importance_from_rebuilt_study(search: Built) -> None:
    imp = search.csv("importance.csv")
    assert set(imp["param"]) <= {"method.name", "optim.lr", "train.batch_size", "augment.pipeline?random_resized_crop", "augment.pipeline?timeout"}
    assert "method.temperature" not in set(imp["param"])  # branch-specific: not in every trial
    assert imp["importance"].sum() == pytest.approx(1.0, abs=1e-6)
    assert (imp["importance"] >= 0).all()
    page = (search.out / "index.html").read_text()
    assert re.search(r"fANOVA over \d+ complete trials \(shown from \d+ complete trials on\)", page)


def test_redirected_report_output_is_not_wrapped_at_80_columns(monkeypatch) -> None:
    import io

    from ecg_tune.tune.report.build import _console

    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert _console().width == 200


def test_wide_tables_scroll_instead_of_being_cut_off() -> None:
    from ecg_tune.tune.report.html_page import _CSS

    assert re.search(r"\.scroll \{[^}]*overflow-x: auto", _CSS) and "white-space: normal" in _CSS


def test_space_distributions_and_subset_flags(search: Built) -> None:
    rec = open_sweep(search.settings.sweep_dir)
    dists = distributions(rec.space)
    assert dists["optim.lr"].log and dists["method.name"].choices == ("simclr", "byol")
    t2 = next(t for t in rec.trials if t.trial_id == "t2")
    params = trial_params(t2, dists)
    assert params["augment.pipeline?random_resized_crop"] is True and params["augment.pipeline?timeout"] is False
    assert params["train.batch_size"] == 128 and params["optim.lr"] == pytest.approx(0.0003)
    assert "method.tau0" not in params


def test_importance_skipped_with_note_for_ablation(ablation: Built) -> None:
    assert not (ablation.out / "importance.png").exists()
    summary = json.loads((ablation.out / "summary.json").read_text())
    assert any("importance skipped" in n for n in summary["notes"])


# ---------------------------------------------------------------- plots, HTML, MLflow artifacts
def _pngs(built: Built) -> list[Path]:
    return sorted(built.out.glob("*.png"))


@pytest.mark.parametrize("which", ["search", "ablation"])
def test_every_plot_is_a_valid_png(which: str, request: pytest.FixtureRequest) -> None:
    built: Built = request.getfixturevalue(which)
    names = {p.name for p in _pngs(built)}
    expected = {"history.png", "parallel.png", "learning_curves.png", "label_efficiency.png", "noise.png"}
    if which == "search":
        expected.add("importance.png")
    assert expected <= names
    for path in _pngs(built):
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        image = mpimg.imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        assert image[..., :3].std() > 0.01  # something is drawn


def test_html_is_self_contained_with_tables_and_images(search: Built) -> None:
    text = search.index.read_text()
    for table_id in ("leaderboard", "paper", "label_efficiency", "noise"):
        assert f'id="{table_id}"' in text
    sources = re.findall(r'<img [^>]*src="([^"]+)"', text)
    assert len(sources) == len(_pngs(search))
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    for trial_id in ("t0", "t6", "t8"):
        assert f"<td>{trial_id}</td>" in text
    assert "0.883" in text and "SimCLR" in text  # published values next to ours
    assert "file://" not in text and 'src="http' not in text


def test_html_ablation_section(ablation: Built) -> None:
    text = ablation.index.read_text()
    assert 'id="ablation"' in text and "augment.pipeline=timeout" in text and "(bootstrap)" in text


def test_report_is_logged_to_the_parent_run(search: Built) -> None:
    client = MlflowClient(search.settings.tracking_uri)
    logged = {Path(a.path).name for a in client.list_artifacts(search.settings.parent_run_id, "report")}
    written = {p.name for p in search.out.iterdir() if p.name in OUTPUTS}
    assert written <= logged and {"index.html", "leaderboard.csv", "paper_table.csv", "history.png"} <= logged


# ---------------------------------------------------------------- locating and robustness
def test_report_by_name_and_tracking_uri_without_folder(search: Built, tmp_path: Path) -> None:
    out = tmp_path / "remote"
    index = build_report("search", tracking_uri=search.settings.tracking_uri, out_dir=out, console=Console(file=io.StringIO()))
    assert index == out / "index.html"
    pd.testing.assert_frame_equal(pd.read_csv(out / "leaderboard.csv"), search.csv("leaderboard.csv"))


def test_sweep_found_by_name_under_storage(search: Built, root: Path) -> None:
    rec = open_sweep("search", storage=str(root))
    assert rec.sweep_dir == Path(search.settings.sweep_dir) and rec.parent_run_id == search.settings.parent_run_id
    assert (rec.objective, rec.mode) == ("probe_auc", "max") and len(rec.trials) == 9


def test_unknown_sweep_without_tracking_uri_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(EcgTuneError, match="--tracking-uri"):
        build_report(str(tmp_path / "nope"), storage=str(tmp_path))


def test_sweep_without_trials_or_sweep_yaml(root: Path) -> None:
    settings = build_store(root, "empty", None, [])
    buffer = io.StringIO()
    index = build_report(settings.sweep_dir, console=Console(file=buffer))
    text = index.read_text()
    assert "no trial runs yet" in text and "sweep.yaml not found" in text
    assert not list(index.parent.glob("*.png")) and "no trials yet" in buffer.getvalue()
    paper = pd.read_csv(index.parent / "paper_table.csv")
    assert len(paper) == len(PUBLISHED) and paper["linear_test_auc"].isna().all()


def test_only_failed_and_running_trials(root: Path) -> None:
    rng = np.random.default_rng(3)
    trials = [t for t in search_trials(rng) if t.trial_id in ("t6", "t7", "t8")]
    settings = build_store(root, "failing", SEARCH_YAML.replace("name: search", "name: failing"), trials)
    index = build_report(settings.sweep_dir, console=Console(file=io.StringIO()))
    summary = json.loads((index.parent / "summary.json").read_text())
    assert summary["complete"] == 0 and summary["best"] is None
    assert summary["states"] == {"diverged": 1, "error": 1, "running": 1}
    assert any("importance skipped: 0 complete trials" in n for n in summary["notes"])
    assert not (index.parent / "ablation.csv").exists()


# ---------------------------------------------------------------- issue 14: reviewer statistics
def _sk_macro_present(arrays: dict) -> float:
    """sklearn macro ROC-AUC over the classes with a positive and a negative, rows sorted by record id."""
    from sklearn.metrics import roc_auc_score

    order = np.argsort(arrays["record_ids"])
    y, s = arrays["targets"][order], arrays["scores"][order]
    return float(np.mean([roc_auc_score(y[:, c], s[:, c]) for c in range(y.shape[1]) if 0 < y[:, c].sum() < len(y)]))


def _hand_holm(p: list[float]) -> list[float]:
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out = [0.0] * m
    for i in range(m):
        out[order[i]] = max(min(1.0, (m - j) * p[order[j]]) for j in range(i + 1))
    return out


def test_paired_test_against_the_baseline_with_holm(ablation: Built) -> None:
    paired = ablation.csv("paired.csv")
    fakes = {t.trial_id: t for t in ablation.trials}
    assert set(zip(paired["cell"], paired["protocol"])) == {(c, p) for c in ("byol", "augment.pipeline=timeout") for p in ("linear", "finetune")}
    for row in paired.itertuples():
        cell_trials = [t for t in fakes.values() if t.cell == row.cell and t.complete]
        diffs = []
        for t in cell_trials:  # paired by seed with the baseline trial of the same seed
            base = next(b for b in fakes.values() if b.cell == "baseline" and b.params["seed"] == t.params["seed"])
            diffs.append(_sk_macro_present(t.npz[row.protocol]) - _sk_macro_present(base.npz[row.protocol]))
        assert row.n_pairs == len(cell_trials) and row.n_records == N_TEST and row.n_classes == 3  # HYP absent
        assert row.diff == pytest.approx(np.mean(diffs), abs=1e-9)
        assert row.ci_low < row.diff < row.ci_high
        assert row.p_value == pytest.approx(math.erfc(abs(row.diff) / row.se / math.sqrt(2)), rel=1e-9)
    assert list(paired["p_holm"]) == pytest.approx(_hand_holm(list(paired["p_value"])), abs=1e-12)
    assert list(paired["significant"]) == [p < 0.05 for p in paired["p_holm"]]
    byol = paired[paired["cell"] == "byol"]
    assert byol["significant"].all() and (byol["diff"] > 0).all()  # noise 0.4 vs 1.0 on the same records
    text = ablation.index.read_text()
    assert 'id="paired"' in text and "Holm" in text and "paired test vs baseline" in ablation.terminal


def test_results_table_auprc_present_classes_absent_and_warnings(ablation: Built) -> None:
    results = ablation.csv("results.csv").fillna({"warnings": "", "absent_classes": ""})
    fakes = [t for t in ablation.trials if t.cell == "baseline"]
    row = results[(results["group"] == "baseline") & (results["protocol"] == "linear")].iloc[0]
    assert row["n"] == 3
    assert row["test_auprc"] == pytest.approx(np.mean([t.jsons["linear"]["test_auprc"] for t in fakes]))
    assert row["test_auc_present"] == pytest.approx(np.mean([t.jsons["linear"]["test_auc_present"] for t in fakes]))
    assert row["test_auc"] == pytest.approx(np.mean([t.final["linear.test_auc"] for t in fakes]))
    assert row["absent_classes"] == "HYP" and row["n_absent"] == 1 and "below 0.5" in row["warnings"]
    text = ablation.index.read_text()
    assert "macro AUPRC" in text and "macro AUROC (present classes)" in text and "absent = 0.5" in text
    assert "1 of 5" in text  # classes absent (n_classes of the fixture's JSON)


def test_old_results_without_the_new_fields_degrade_with_a_note(search: Built) -> None:
    results = search.csv("results.csv")
    assert not results.empty and results["test_auprc"].isna().all() and results["test_auc_present"].isna().all()
    summary = json.loads((search.out / "summary.json").read_text())
    assert any("older ecg-tune" in n for n in summary["notes"])
    assert not (search.out / "paired.csv").exists()


def test_per_class_results(ablation: Built) -> None:
    table = ablation.csv("per_class.csv")
    fakes = [t for t in ablation.trials if t.cell == "baseline"]
    part = table[(table["group"] == "baseline") & (table["protocol"] == "linear")].set_index("class")
    assert list(part.index) == CODES
    assert part.loc["MI", "auroc"] == pytest.approx(np.mean([t.jsons["linear"]["per_class"]["MI"] for t in fakes]))
    assert part.loc["MI", "auprc"] == pytest.approx(np.mean([t.jsons["linear"]["per_class_auprc"]["MI"] for t in fakes]))
    assert bool(part.loc["HYP", "absent"]) and math.isnan(part.loc["HYP", "auprc"])
    assert 'id="per_class_linear"' in ablation.index.read_text()


def test_random_init_baseline_per_encoder(ablation: Built, search: Built) -> None:
    table = ablation.csv("random_baselines.csv").set_index("encoder")
    values = _cell_values(ablation, "baseline", "random.test_auc")
    row = table.loc["xresnet1d50"]
    assert row["n"] == 3 and row["random_test_auc"] == pytest.approx(values.mean())
    assert row["ci_low"] == pytest.approx(t_interval(values)[0])
    assert row["linear_minus_random"] == pytest.approx(row["best_linear_test_auc"] - values.mean())
    missing = search.csv("random_baselines.csv").set_index("encoder")
    assert "evaluation.protocols: linear,random" in missing.loc["xresnet1d50 (width=16)", "note"]
    summary = json.loads((search.out / "summary.json").read_text())
    assert any("no random-init baseline for encoder xresnet1d50 (width=16)" in n for n in summary["notes"])


def test_paper_table_states_how_the_run_differs_from_the_paper(search: Built, ablation: Built) -> None:
    paper = search.csv("paper_table.csv").set_index("row")
    caveat = paper.loc["simclr (xresnet1d50)", "differs_from_paper"]
    for part in ("encoder width 16 (paper: 64)", "5 of 71 classes scored", "140 records", "4 pretraining epochs (paper: 2000)",
                 "pretraining corpus ptbxl-100hz"):
        assert part in caveat, caveat
    assert paper.loc[[r for r in paper.index if r.startswith("published only")], "differs_from_paper"].isna().all()
    # 5 classes with HYP absent in the ablation's results: 4 scored
    assert "4 of 71 classes scored" in ablation.csv("paper_table.csv").set_index("row").loc["simclr (xresnet1d50)", "differs_from_paper"]
    assert "differs from the paper" in search.terminal and "5 of 71 classes scored" in search.index.read_text()


# ---------------------------------------------------------------- statistics helpers
@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.5, 1.0), min_size=2, max_size=8), st.lists(st.floats(0.5, 1.0), min_size=2, max_size=8))
def test_welch_matches_scipy_confidence_interval(a: list[float], b: list[float]) -> None:
    assume(np.ptp(a) > 1e-3 and np.ptp(b) > 1e-3)  # scipy loses precision on near-constant samples
    d = welch(a, b)
    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(0.95)
    assert d.p_value == pytest.approx(res.pvalue, rel=1e-6, abs=1e-12)
    assert (d.low, d.high) == (pytest.approx(ci.low, abs=1e-9), pytest.approx(ci.high, abs=1e-9))


def test_summarize_edge_cases() -> None:
    assert summarize([]).n == 0
    one = summarize([0.8], bootstrap=(0.7, 0.9))
    assert (one.mean, one.low, one.high, one.kind) == (0.8, 0.7, 0.9, "bootstrap")
    assert summarize([0.8, math.nan]).kind == "" and summarize([0.8, math.nan]).n == 1
    assert math.isnan(welch([0.8], [0.7, 0.9]).low)


# ---------------------------------------------------------------- rendered in a browser
def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


@pytest.mark.slow
def test_html_renders_in_headless_chromium(search: Built, tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    url = search.index.resolve().as_uri()
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,2000", url], check=True, capture_output=True, timeout=120)
    image = mpimg.imread(shot)
    assert image.shape[0] >= 1000 and image[..., :3].std() > 0.05  # not a blank page
    dom = subprocess.run([*flags, "--dump-dom", url], check=True, capture_output=True, text=True, timeout=120).stdout
    assert dom.count("<table") >= 4 and 'id="leaderboard"' in dom
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', dom)) == len(_pngs(search))


GOALS_YAML = textwrap.dedent("""\
    name: goals
    data: {pretrain: [/d], downstream: /d}
    objective: {metric: [probe_auc, device_hours], mode: [max, min]}
    budget: {trials: 5, max_epochs: 2}
    fixed: {encoder.name: xresnet1d50, evaluation.protocols: linear}
    space: {optim.lr: {float: [1.0e-4, 1.0e-2], log: true}}
    """)


def test_two_objective_report_marks_the_pareto_front_and_shows_costs(root: Path) -> None:
    rng = np.random.default_rng(3)
    # (final probe_auc, device_hours): t0 and t1 and t3 are on the front, t2 is dominated by t1,
    # t4 (stopped early) is never on it.
    points = {"t0": (0.90, 0.030), "t1": (0.85, 0.010), "t2": (0.80, 0.020), "t3": (0.70, 0.005)}
    trials = []
    for tid, (probe, hours) in points.items():
        t = done(tid, {"optim.lr": float(rng.uniform(1e-4, 1e-2)), "seed": 0}, 2, rng)
        t.probe[-1] = probe
        t.final.update({"device_hours": hours, "params": 1234.0})
        with_protocols(t, rng, ["linear"])
        trials.append(t)
    trials.append(FakeTrial("t4", {"optim.lr": 0.005, "seed": 0}, "finished", "FINISHED", 1, [0.99]))
    built = _build(root, "goals", GOALS_YAML, trials)
    board = built.csv("leaderboard.csv").set_index("trial_id")

    def dominated(a: tuple[float, float]) -> bool:  # by hand: higher probe and lower hours is better
        return any(b[0] >= a[0] and b[1] <= a[1] and b != a for b in points.values())

    assert {tid: bool(board.loc[tid, "pareto"]) for tid in points} == {tid: not dominated(p) for tid, p in points.items()}
    assert not bool(board.loc["t4", "pareto"])
    assert list(board.loc[list(points), "device_hours"]) == [h for _, h in points.values()]
    assert "◆" in built.index.read_text() and "device_hours" in built.terminal
