"""Stand-ins of the evaluation tests: a learnable task (class = a sinusoid frequency, folds 1-10), a
tiny Conv1d encoder and a duck-typed dataset over `SignalStore.from_signals`."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ecg_tune.config import DataConfig, EvalConfig
from ecg_tune.data.store import SignalStore
from ecg_tune.ssl.encoders.base import Encoder

FS = 100.0
LEADS = ("I", "II")
FREQS = (3.0, 8.0, 17.0)  # class c present <=> a sinusoid at FREQS[c] Hz
LENGTH = 300
WINDOW, STRIDE = 100, 50


# --- stand-ins ---------------------------------------------------------------------------------------


class TinyEncoder(Encoder):
    """Two Conv-BN-ReLU blocks and average pooling: enough to read band power."""

    def __init__(self, n_leads: int = 2, input_length: int = WINDOW, width: int = 16):
        super().__init__(None, n_leads, input_length)
        self.block1 = nn.Sequential(nn.Conv1d(n_leads, width, 9, padding=4), nn.BatchNorm1d(width), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv1d(width, width, 5, padding=2), nn.BatchNorm1d(width), nn.ReLU())
        self.feature_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block2(self.block1(x)).mean(dim=-1)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        return [list(self.block1.parameters()), list(self.block2.parameters())]


class FakeDataset:
    """Duck-typed ECGDataset: store, records, lead_names, fs, normalization, targets, indices.

    Records which folds the protocols read targets of (`target_folds`).
    """

    def __init__(self, n_per_fold: int = 24, seed: int = 0, shuffle_test_labels: bool = False):
        rng = np.random.default_rng(seed)
        n = 10 * n_per_fold
        self.fold = np.repeat(np.arange(1, 11), n_per_fold)
        y = (rng.random((n, len(FREQS))) < 0.4).astype(np.float32)
        y[y.sum(axis=1) == 0, rng.integers(0, len(FREQS))] = 1
        t = np.arange(LENGTH) / FS
        signals = []
        for i in range(n):
            s = 0.1 * rng.normal(size=(len(LEADS), LENGTH))
            for c, f in enumerate(FREQS):
                if y[i, c]:
                    s += (
                        0.5
                        * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))[None, :]
                        * rng.uniform(0.5, 1.5, (len(LEADS), 1))
                    )
            signals.append(s.astype(np.float32))
        if shuffle_test_labels:
            test = np.flatnonzero(self.fold == 10)
            y[test] = y[rng.permutation(test)]
        self.y = y
        self.store = SignalStore.from_signals(signals, LEADS, FS)
        self.records = pd.DataFrame({"record_id": [f"r{i}" for i in range(n)], "fold": self.fold})
        self.lead_names = LEADS
        self.fs = FS
        train = np.concatenate([s for s, f in zip(signals, self.fold) if f <= 8], axis=1)
        self.normalization = (train.mean(axis=1), train.std(axis=1))
        self.target_folds: list[set[int]] = []

    def indices(self, folds: list[int]) -> np.ndarray:
        return np.flatnonzero(np.isin(self.fold, folds))

    def targets(self, label_set: str, indices: np.ndarray) -> np.ndarray:
        self.target_folds.append(set(self.fold[indices].tolist()))
        return self.y[indices]

    def label_vocabulary(self, label_set: str) -> list[str]:
        return [f"f{f:g}" for f in FREQS]


DATA = DataConfig(window=WINDOW, eval_stride=STRIDE, label_set="freq")


def _cfg(**kw: Any) -> EvalConfig:
    base = dict(
        batch_size=32,
        linear_epochs=10,
        linear_lr=3e-2,
        finetune_epochs=4,
        finetune_lr=3e-3,
        finetune_head_epochs=0,
        bootstrap=50,
        probe_epochs=5,
        noise_levels=["L1", "L2", "L3", "L4", "L5", "L6"],
    )
    base.update(kw)
    return EvalConfig(**base)


def _encoder(seed: int = 0) -> TinyEncoder:
    torch.manual_seed(seed)
    return TinyEncoder()
