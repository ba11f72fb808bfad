"""The quick linear probe the tuner runs every few pretraining epochs (its scheduler metric).

Unlike the linear protocol (a random window per record per epoch through the encoder), the probe
embeds every sliding window of folds 1-8 and 9 ONCE with the frozen encoder and trains a linear head
on those cached features, each window labelled with its record's targets. Features are z-scored with
training statistics so that one learning rate suits every encoder and every stage of pretraining.
It returns the record-level fold-9 macro AUC after the last epoch (no selection); fold 10 is not read.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ecg_tune.config import DataConfig, EvalConfig
from ecg_tune.evaluate import runner
from ecg_tune.evaluate.heads import Normalize
from ecg_tune.evaluate.metrics import aggregate_windows, macro_auc
from ecg_tune.evaluate.scoring import module_device, window_features


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
    """Record-level fold-9 macro AUC of a linear head trained for `eval.probe_epochs` mini-batch
    AdamW epochs on frozen window features of folds 1-8 (at most `max_records` records when > 0,
    a seeded subset). The encoder's weights, BN statistics and training flags are left as they were."""
    label_set, eval_cfg, data_cfg = runner.defaults(label_set, eval_cfg, data_cfg)
    trained, header = runner.source(encoder)
    task = runner.task_for(header, dataset, label_set, data_cfg, device, with_test=False)
    runner.check_leads(trained, task)
    train, y_train = task.train, task.y_train
    if 0 < max_records < len(train):
        keep = np.sort(np.random.default_rng(seed).choice(len(train), size=max_records, replace=False))
        train, y_train = train[keep], y_train[keep]

    out_device = task.device
    # The normaliser sits on the encoder's device; the encoder itself is not moved or copied.
    embed = nn.Sequential(Normalize(task.normalization, task.n_leads).to(module_device(trained)), trained)
    x_train, pos_train = window_features(embed, task, train, out_device)
    x_val, pos_val = window_features(embed, task, task.val, out_device)
    mean, std = x_train.mean(dim=0), x_train.std(dim=0).clamp_min(1e-6)
    x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    y_windows = torch.from_numpy(y_train[pos_train]).to(out_device)

    with runner.seeded(seed):
        head = nn.Linear(x_train.shape[1], task.n_classes)
    head = head.to(out_device)
    optimiser = torch.optim.AdamW(
        head.parameters(), lr=eval_cfg.linear_lr, weight_decay=eval_cfg.linear_weight_decay
    )
    order = torch.Generator().manual_seed(seed)
    batch = max(1, eval_cfg.batch_size)
    for _ in range(eval_cfg.probe_epochs):
        perm = torch.randperm(len(x_train), generator=order).to(out_device)
        for i in range(0, len(perm), batch):
            idx = perm[i : i + batch]
            loss = F.binary_cross_entropy_with_logits(head(x_train[idx]), y_windows[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    with torch.no_grad():
        probs = torch.sigmoid(head(x_val)).cpu().double().numpy()
    scores = aggregate_windows(probs, pos_val, len(task.val), task.aggregate)
    return macro_auc(task.y_val, scores)[0]
