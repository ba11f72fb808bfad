"""Classifier = normalisation + encoder + linear head, its optimiser groups, and the training loop.

The loop trains on one random window per training record per epoch (`WindowBatches`), scores the
validation fold (9) at record level after every epoch and keeps the best state in memory. It never
sees fold 10: the caller scores the test fold once, with the returned best state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ecg_tune.evaluate.metrics import macro_auc
from ecg_tune.evaluate.scoring import predict_records
from ecg_tune.evaluate.task import MeanStd, Task
from ecg_tune.ssl.encoders.base import Encoder


class Normalize(nn.Module):
    """Per-lead z-score of (B, leads, T) mV input; identity without statistics."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, stats: MeanStd | None, n_leads: int):
        super().__init__()
        mean, std = stats if stats is not None else (np.zeros(n_leads), np.ones(n_leads))
        self.enabled = stats is not None
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean), dtype=torch.float32).view(1, -1, 1))
        self.register_buffer("std", torch.as_tensor(np.asarray(std), dtype=torch.float32).view(1, -1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std if self.enabled else x


class Classifier(nn.Module):
    """mV windows (B, leads, T) → logits (B, C). With `frozen`, the encoder is a fixed feature map:
    no gradients, and eval mode even while the classifier trains (BN statistics stay as they are)."""

    encoder: Encoder

    def __init__(self, encoder: Encoder, n_classes: int, stats: MeanStd | None, n_leads: int):
        super().__init__()
        self.normalize = Normalize(stats, n_leads)
        self.encoder = encoder
        self.head = nn.Linear(int(encoder.feature_dim), n_classes)
        self.frozen = False

    def freeze_encoder(self, frozen: bool) -> None:
        self.frozen = frozen
        self.encoder.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        if self.frozen:
            with torch.no_grad():
                return self.encoder(x)
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def discriminative_groups(model: Classifier, lr: float, factor: float) -> list[dict[str, Any]]:
    """AdamW groups: head at `lr`; the encoder's layer groups, from the output side, at lr·factor,
    lr·factor², ... (factor 0.25: each group 4x below the next). factor 1 = one lr everywhere.

    Encoder parameters that `layer_groups()` does not list join the input-most group (lowest lr).
    """
    if not 0 < factor <= 1:
        from ecg_tune.errors import ConfigError

        raise ConfigError("evaluation.finetune_discriminative_factor", f"must be in (0, 1], got {factor}")
    groups = [list(g) for g in model.encoder.layer_groups()]
    seen: set[int] = set()
    unique: list[list[nn.Parameter]] = []
    for g in groups:
        params = [p for p in g if id(p) not in seen]
        seen.update(id(p) for p in params)
        unique.append(params)
    leftover = [p for p in model.encoder.parameters() if id(p) not in seen]
    if leftover:
        if unique:
            unique[0] = unique[0] + leftover
        else:
            unique = [leftover]
    out: list[dict[str, Any]] = [{"params": list(model.head.parameters()), "lr": lr, "name": "head"}]
    for depth, params in enumerate(reversed(unique), start=1):
        if params:
            out.append(
                {"params": params, "lr": lr * factor**depth, "name": f"encoder[{len(unique) - depth}]"}
            )
    return out


@dataclass
class FitOutcome:
    best_state: dict[str, torch.Tensor] | None
    best_val: float
    selected_epoch: int  # global 1-based epoch number of the best state; 0 = none trained
    history: list[dict[str, Any]] = field(default_factory=list)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def fit(
    model: Classifier,
    task: Task,
    groups: list[dict[str, Any]],
    *,
    epochs: int,
    batch_size: int,
    weight_decay: float,
    seed: int,
    phase: str,
    first_epoch: int = 0,
) -> FitOutcome:
    """Train for `epochs` epochs (AdamW, constant lr, BCE with logits) selecting on record-level
    fold-9 macro AUC; returns the best state (earliest epoch on ties) and the per-epoch history."""
    from ecg_tune.ssl.loader import WindowBatches

    if len(task.train) < 2:
        raise ValueError(f"need at least 2 training records, got {len(task.train)}")
    batches = WindowBatches(
        task.store,
        task.train,
        window=task.window,
        batch_size=batch_size,
        seed=seed,
        targets=task.y_train,
        device=task.device,
        normalization=None,  # the classifier normalises (so noise can be added in mV)
        lead_indices=task.lead_indices,
        # Small label-efficiency subsets may hold fewer records than one batch.
        drop_last=len(task.train) >= batch_size,
    )
    optimiser = torch.optim.AdamW(groups, weight_decay=weight_decay)
    outcome = FitOutcome(best_state=None, best_val=-np.inf, selected_epoch=first_epoch)
    for e in range(first_epoch, first_epoch + epochs):
        model.train()
        loss_sum = torch.zeros((), device=task.device)
        steps = 0
        for batch in batches.epoch(e):
            if batch.x.shape[0] < 2 and not model.frozen:
                continue  # BatchNorm cannot train on a single window
            assert batch.y is not None  # WindowBatches was given targets
            logits = model(batch.x)
            loss = F.binary_cross_entropy_with_logits(logits, batch.y.to(logits.dtype))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            loss_sum += loss.detach()
            steps += 1
        val_auc, _ = macro_auc(task.y_val, predict_records(model, task, task.val))
        outcome.history.append(
            {
                "epoch": e + 1,
                "phase": phase,
                "train_loss": float(loss_sum) / max(steps, 1),
                "val_auc": val_auc,
            }
        )
        if val_auc > outcome.best_val:
            outcome.best_val, outcome.selected_epoch = val_auc, e + 1
            outcome.best_state = _snapshot(model)
    return outcome
