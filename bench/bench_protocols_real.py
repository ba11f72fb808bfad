"""The evaluation protocols on the 500 real PTB-XL records (issue #14): figures with CIs and times.

Rows: random-init xresnet1d50 + linear head (superdiagnostic and all statements), a logistic
regression (sklearn) on the same frozen features as the independent check of the head, supervised
xresnet1d50, and a short SimCLR pretraining on folds 1-8 (leakage guard) evaluated linear, random-init
and finetuned. The same settings as tests/evaluate/test_real_ptbxl.py.

    .venv/bin/python bench/bench_protocols_real.py --ptbxl ../shared/data/ptb-xl-sample
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import header, table  # type: ignore[import-not-found]
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from ecg_tune.config import DataConfig, EvalConfig, TrialConfig
from ecg_tune.data.dataset import open_dataset
from ecg_tune.data.ingest import ingest
from ecg_tune.evaluate import runner
from ecg_tune.evaluate.protocols import finetune, linear, random, supervised
from ecg_tune.evaluate.scoring import window_features
from ecg_tune.evaluate.task import make_task
from ecg_tune.ssl.pretrain import run_pretraining


def _row(name: str, result: Any, seconds: float) -> list[str]:
    lo, hi = result.test_ci
    row = _cells(name, result, seconds, lo, hi)
    print(" | ".join(row), flush=True)  # as it comes: the whole run takes tens of minutes on 2 cores
    return row


def _cells(name: str, result: Any, seconds: float, lo: float, hi: float) -> list[str]:
    return [name, result.label_set, f"{result.n_classes - len(result.absent_classes)}/{result.n_classes}",
            f"{result.test_auc:.3f} [{lo:.3f}, {hi:.3f}]", f"{result.test_auprc:.3f}", str(result.selected_epoch),
            f"{seconds:.0f}", "; ".join(result.warnings) or "-"]


def logistic(data: Any, label_set: str) -> float:
    task = make_task(data, label_set=label_set, data_cfg=DataConfig())
    encoder, _ = runner.fresh_encoder(("xresnet1d50", {}), task, seed=0)
    x_train, pos_train = window_features(encoder, task, task.train, task.device)
    x_test, pos_test = window_features(encoder, task, task.test, task.device)
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    xtr, xte = ((x_train - mean) / std).numpy(), ((x_test - mean) / std).numpy()
    aucs = []
    for c in range(task.n_classes):
        if task.y_train[:, c].min() == task.y_train[:, c].max() or task.y_test[:, c].min() == task.y_test[:, c].max():
            aucs.append(0.5)
            continue
        clf = LogisticRegression(C=1.0, max_iter=2000).fit(xtr, task.y_train[pos_train, c])
        p = np.bincount(pos_test, weights=clf.predict_proba(xte)[:, 1]) / np.bincount(pos_test)
        aucs.append(roc_auc_score(task.y_test[:, c], p))
    return float(np.mean(aucs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ptbxl", default=str(Path(__file__).resolve().parents[2] / "shared/data/ptb-xl-sample"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    header("PTB-XL protocols on the 500-record sample", f"{args.threads} torch threads, bootstrap 1000")
    rows = []
    cfg = EvalConfig()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ptbxl"
        ingest("ptbxl", Path(args.ptbxl), path, progress=False)
        data = open_dataset(path)
        for label_set in ("superdiagnostic", "all"):
            t = time.perf_counter()
            res = random("xresnet1d50", {}, data, label_set=label_set, eval_cfg=cfg, seed=0)
            rows.append(_row("random-init xresnet1d50 + linear", res, time.perf_counter() - t))
            t = time.perf_counter()
            auc = logistic(data, label_set)
            rows.append(["  sklearn logistic regression, same features", label_set, "", f"{auc:.3f}", "", "", f"{time.perf_counter() - t:.0f}", "-"])
            print(" | ".join(rows[-1]), flush=True)
        t = time.perf_counter()
        sup = supervised("xresnet1d50", {}, data, label_set="superdiagnostic", eval_cfg=EvalConfig(finetune_epochs=8), seed=0)
        rows.append(_row("supervised xresnet1d50 (8 epochs)", sup, time.perf_counter() - t))
        flat = {**TrialConfig().to_flat(), "data.pretrain": str(path), "data.downstream": str(path),
                "train.epochs": 4, "train.batch_size": 64, "method.name": "simclr"}
        t = time.perf_counter()
        pre = run_pretraining(TrialConfig.from_flat(flat), Path(tmp) / "simclr")
        pretrain_s = time.perf_counter() - t
        for name, fn in (("SimCLR 4 epochs + linear", linear), ("SimCLR 4 epochs + finetune (8 epochs)", finetune)):
            t = time.perf_counter()
            kw = {"eval_cfg": EvalConfig(finetune_epochs=8)} if fn is finetune else {"eval_cfg": cfg}
            res = fn(pre.encoder, data, label_set="superdiagnostic", seed=0, **kw)
            rows.append(_row(name, res, time.perf_counter() - t))
        print(f"SimCLR pretraining: {pre.n_records} records of folds 1-8 ({pre.excluded_leakage} fold-9/10 records "
              f"excluded), 4 epochs, batch 64: {pretrain_s:.0f} s")
    print(table(["protocol", "label set", "classes", "test macro AUC [95% CI]", "AUPRC", "epoch", "s", "warnings"], rows))


if __name__ == "__main__":
    main()
