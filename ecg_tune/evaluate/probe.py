"""The quick linear probe the tuner runs every few pretraining epochs (its scheduler metric).

It is the linear protocol's head, shortened: the same classifier (input normalisation, frozen encoder,
training-set feature standardisation, Linear head), the same cached-feature training loop and fold-9
selection (`evaluate.fitting`), for `eval.probe_epochs` epochs instead of `eval.linear_epochs`, and it
never builds the test split (fold 10 is not read). So a trial's `probe_auc` and the fold-9 value of
its final linear evaluation measure the same thing. The encoder's weights, BN statistics and training
flags are left as they were (the classifier wraps it only while the probe runs).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ecg_tune.config import DataConfig, EvalConfig
from ecg_tune.evaluate import runner
from ecg_tune.evaluate.scoring import eval_mode, module_device


def quick_probe(
    encoder: Any,
    dataset: Any,
    *,
    label_set: str | None = None,
    data_cfg: DataConfig | None = None,
    eval_cfg: EvalConfig | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    max_records: int = 0,
) -> float:
    """Best record-level fold-9 macro AUC of the linear protocol's head trained for `eval.probe_epochs`
    epochs on frozen window features of folds 1-8 (at most `max_records` records when > 0, a seeded
    subset)."""
    label_set, eval_cfg, data_cfg = runner.defaults(label_set, eval_cfg, data_cfg)
    trained, header = runner.source(encoder)
    task = runner.task_for(header, dataset, label_set, data_cfg, device, with_test=False)
    runner.check_leads(trained, task)
    if 0 < max_records < len(task.train):
        keep = np.sort(np.random.default_rng(seed).choice(len(task.train), size=max_records, replace=False))
        task = task.with_train(task.train[keep], task.y_train[keep], task.train_folds)
    cfg = runner.resolve(eval_cfg, runner.recipe_for(trained, header))
    requires_grad = [p.requires_grad for p in trained.parameters()]
    original_device = module_device(trained)
    with eval_mode(trained):
        model = runner.make_classifier(trained, task, seed)
        try:
            outcome = runner.train_linear(model, task, cfg, seed, "probe", cfg.probe_epochs)
        finally:
            for p, flag in zip(trained.parameters(), requires_grad):
                p.requires_grad_(flag)
            trained.to(original_device)
    return float(outcome.best_val)

