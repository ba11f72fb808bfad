"""The classifier's training loop, with fold-9 selection.

Two paths, one contract (AdamW, constant lr, BCE with logits; each epoch scores the validation fold
(9) at record level and the best state is kept in memory; fold 10 is never read here):
- frozen encoder (linear evaluation, head-only epochs, the sweep's probe): every sliding window of the
  training and validation records is embedded ONCE (`FeatureCache`); an epoch trains the head on one
  cached window per record per pass, and validation scores come from cached features. A frozen
  encoder's features do not change, so this equals re-encoding every epoch, at a fraction of the cost
  (a CPC linear evaluation re-ran the LSTM over every window at every epoch: >24 min on 500 records).
- trainable encoder (finetuning, training from scratch): one random window per record per pass, as the
  reference.
Either way an epoch makes at least `min_steps` optimiser steps (more passes over the records when the
training set is small), and the head's feature standardisation is fitted before the first step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ecg_tune.evaluate.heads import Classifier
from ecg_tune.evaluate.metrics import aggregate_windows, macro_auc
from ecg_tune.evaluate.scoring import predict_records, window_features
from ecg_tune.evaluate.task import Task

SCALE_RECORDS = 256  # training records whose windows fit the feature scale of a trainable encoder


@dataclass
class FitOutcome:
    best_state: dict[str, torch.Tensor] | None
    best_val: float
    selected_epoch: int  # global 1-based epoch number of the best state; 0 = none trained
    history: list[dict[str, Any]] = field(default_factory=list)
    steps_per_epoch: int = 0


@dataclass
class FeatureCache:
    """Raw pooled features of every sliding window; `*_pos` = the window's record position."""

    train: torch.Tensor
    train_pos: np.ndarray
    val: torch.Tensor
    val_pos: np.ndarray


def _embedder(model: Classifier) -> nn.Module:
    return nn.Sequential(model.normalize, model.encoder)


def cache_features(model: Classifier, task: Task) -> FeatureCache:
    train, train_pos = window_features(_embedder(model), task, task.train, task.device)
    val, val_pos = window_features(_embedder(model), task, task.val, task.device)
    return FeatureCache(train, train_pos, val, val_pos)


def fit_scale(model: Classifier, task: Task, seed: int, cache: FeatureCache | None = None) -> None:
    """Fit the head's feature standardisation once (kept when it is already fitted, e.g. after the
    head-only phase of finetuning): from the cache, else from a seeded subset of training records."""
    if bool(model.scale.fitted):
        return
    if cache is not None:
        model.scale.fit(cache.train)
        return
    rows = task.train
    if len(rows) > SCALE_RECORDS:
        rows = np.sort(np.random.default_rng([seed, 7]).choice(rows, SCALE_RECORDS, replace=False))
    features, _ = window_features(_embedder(model), task, rows, task.device)
    model.scale.fit(features)


def steps_per_pass(n_records: int, batch_size: int) -> int:
    """Optimiser steps of one pass (full batches only, unless the records fill less than one batch)."""
    return max(1, n_records // batch_size) if n_records >= batch_size else 1


def passes_for(n_records: int, batch_size: int, min_steps: int) -> int:
    return max(1, -(-max(min_steps, 1) // steps_per_pass(n_records, batch_size)))


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@torch.no_grad()
def cached_scores(model: Classifier, features: torch.Tensor, pos: np.ndarray, n_records: int, how: str) -> np.ndarray:
    was = model.training
    model.eval()
    probs = torch.sigmoid(model.classify(features)).double().cpu().numpy()
    model.train(was)
    return aggregate_windows(probs, pos, n_records, how)


def _cached_batches(
    cache: FeatureCache, n_records: int, batch_size: int, passes: int, rng: np.random.Generator
) -> list[tuple[torch.Tensor, np.ndarray]]:
    """(window indices, record positions) per batch: each pass = every record once, in a random order,
    with one of its windows drawn at random."""
    counts = np.bincount(cache.train_pos, minlength=n_records)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    per_pass = steps_per_pass(n_records, batch_size)
    size = batch_size if n_records >= batch_size else n_records
    out = []
    for _ in range(passes):
        order = rng.permutation(n_records)
        windows = first[order] + (rng.random(n_records) * counts[order]).astype(np.int64)
        for b in range(per_pass):
            sl = slice(b * size, (b + 1) * size)
            out.append((torch.from_numpy(windows[sl]), order[sl]))
    return out


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
    min_steps: int = 1,
    cache: FeatureCache | None = None,
) -> FitOutcome:
    """Train for `epochs` epochs selecting on record-level fold-9 macro AUC; returns the best state
    (earliest epoch on ties) and the per-epoch history. A frozen model trains on cached features
    (`cache`, computed here when not given)."""
    if len(task.train) < 2:
        raise ValueError(f"need at least 2 training records, got {len(task.train)}")
    if model.frozen and cache is None:
        cache = cache_features(model, task)
    fit_scale(model, task, seed, cache if model.frozen else None)
    optimiser = torch.optim.AdamW(groups, weight_decay=weight_decay)
    outcome = FitOutcome(best_state=None, best_val=-np.inf, selected_epoch=first_epoch)
    batches = None if model.frozen else _window_batches(task, batch_size, seed, min_steps)
    targets = torch.from_numpy(task.y_train).to(task.device)
    passes = passes_for(len(task.train), batch_size, min_steps)
    for e in range(first_epoch, first_epoch + epochs):
        model.train()
        loss_sum = torch.zeros((), device=task.device)
        steps = 0
        if cache is not None and model.frozen:
            rng = np.random.default_rng([seed, e])
            stream: Any = (
                (cache.train[idx.to(task.device)], targets[torch.from_numpy(pos).to(task.device)])
                for idx, pos in _cached_batches(cache, len(task.train), batch_size, passes, rng)
            )
        else:
            assert batches is not None
            stream = ((b.x, b.y) for b in batches.epoch(e))
        for x, y in stream:
            if x.shape[0] < 2:
                continue  # BatchNorm (encoder or 2FC head) cannot train on a single window
            logits = model.classify(x) if model.frozen else model(x)
            loss = F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            loss_sum += loss.detach()
            steps += 1
        if cache is not None and model.frozen:
            val_scores = cached_scores(model, cache.val, cache.val_pos, len(task.val), task.aggregate)
        else:
            val_scores = predict_records(model, task, task.val)
        val_auc, _ = macro_auc(task.y_val, val_scores)
        outcome.history.append(
            {"epoch": e + 1, "phase": phase, "train_loss": float(loss_sum) / max(steps, 1), "val_auc": val_auc,
             "steps": steps}
        )
        outcome.steps_per_epoch = steps
        if val_auc > outcome.best_val:
            outcome.best_val, outcome.selected_epoch = val_auc, e + 1
            outcome.best_state = _snapshot(model)
    return outcome


def _window_batches(task: Task, batch_size: int, seed: int, min_steps: int) -> Any:
    from ecg_tune.ssl.loader import WindowBatches

    n = len(task.train)
    natural = n // batch_size if n >= batch_size else 1
    return WindowBatches(
        task.store,
        task.train,
        window=task.window,
        batch_size=min(batch_size, n),
        seed=seed,
        targets=task.y_train,
        device=task.device,
        normalization=None,  # the classifier normalises (so noise can be added in mV)
        lead_indices=task.lead_indices,
        drop_last=True,
        steps_per_epoch=max(natural, min_steps) if natural < min_steps else 0,
    )
