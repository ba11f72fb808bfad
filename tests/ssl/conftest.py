"""Shared helpers of the ssl tests: toy encoder/method/augmentation registered by name
(`toy_registries`), a toy store, header and config, and `one_thread` for small real models."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from ecg_tune.config import TrialConfig
from ecg_tune.data.store import SignalStore
from ecg_tune.ssl.augment.base import Augmentation
from ecg_tune.ssl.encoders.base import Encoder
from ecg_tune.ssl.methods.base import Batch, Method

LEADS = ("I", "II", "V1")
FS = 100.0

# --------------------------------------------------------------------------------------------- toys


@dataclass
class ToyEncoderParams:
    width: int = 8


class ToyEncoder(Encoder):
    Params = ToyEncoderParams

    @classmethod
    def min_length(cls, params: ToyEncoderParams) -> int:
        return 4

    def __init__(self, params: ToyEncoderParams, n_leads: int, input_length: int):
        super().__init__(params, n_leads, input_length)
        self.conv = nn.Conv1d(n_leads, params.width, 5, padding=2)
        self.bn = nn.BatchNorm1d(params.width)
        self.feature_dim = params.width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x))).mean(-1)


@dataclass
class ToyMethodParams:
    noise: float = 0.1
    window: int = 0  # > 0: overrides the crop length (like CPC)


class ToyMethod(Method):
    """Two augmented views; dropout and noise from torch's default RNG, a factor from numpy's and
    python's global RNGs, and an EMA buffer updated in on_step_end: every kind of state a resume must
    restore."""

    Params = ToyMethodParams

    def __init__(self, encoder: Encoder, params: ToyMethodParams):
        super().__init__(encoder, params)
        self.head = nn.Linear(encoder.feature_dim, 4)
        self.dropout = nn.Dropout(0.2)
        self.register_buffer("ema", torch.zeros(4))
        self.calls: list[tuple] = []

    def window_length(self, default: int) -> int:
        return self.params.window or default

    def training_step(self, batch: Batch, augment) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        z1 = self.head(self.dropout(self.encoder(augment(batch.x))))
        z2 = self.head(self.dropout(self.encoder(augment(batch.x))))
        z1 = z1 + self.params.noise * torch.randn_like(z1)
        scale = 1.0 + 0.01 * float(np.random.rand()) + 0.01 * random.random()
        loss = scale * (F.mse_loss(z1, z2) + (z1.std(0) - 1).pow(2).mean())
        return loss, {"spread": z1.std(0).mean().detach()}

    def on_train_start(self, total_steps: int, steps_per_epoch: int) -> None:
        self.calls.append(("start", total_steps, steps_per_epoch))

    def on_epoch_start(self, epoch: int) -> None:
        self.calls.append(("epoch", epoch))

    @torch.no_grad()
    def on_step_end(self, step: int, total_steps: int) -> None:
        self.calls.append(("step", step, total_steps))
        self.ema.mul_(0.9).add_(0.1 * self.head.bias)


@dataclass
class ToySupervisedParams:
    n_classes: int = 1


class ToySupervised(Method):
    Params = ToySupervisedParams
    needs_labels = True

    def __init__(self, encoder: Encoder, params: ToySupervisedParams):
        super().__init__(encoder, params)
        self.head = nn.Linear(encoder.feature_dim, params.n_classes)

    def training_step(self, batch: Batch, augment) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self.head(self.encoder(batch.x)).float()
        return F.binary_cross_entropy_with_logits(logits, batch.y), {}


@dataclass
class ToyJitterParams:
    sigma: float = 0.05


class ToyJitter(Augmentation):
    Params = ToyJitterParams

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x + self.params.sigma * noise


@pytest.fixture
def toy_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make "toy" (encoder/method), "toy_supervised" and "toy_jitter" buildable by name."""
    from ecg_tune.ssl.augment import AUGMENTATIONS
    from ecg_tune.ssl.encoders import ENCODERS
    from ecg_tune.ssl.methods import METHODS

    here = __name__
    monkeypatch.setitem(ENCODERS._entries, "toy", f"{here}:ToyEncoder")
    monkeypatch.setitem(METHODS._entries, "toy", f"{here}:ToyMethod")
    monkeypatch.setitem(METHODS._entries, "toy_supervised", f"{here}:ToySupervised")
    monkeypatch.setitem(AUGMENTATIONS._entries, "toy_jitter", f"{here}:ToyJitter")


def toy_header(**extra) -> dict:
    """A complete header for checkpoints of the toy pieces (what `run_header` writes for real runs)."""
    return {
        "method": {"name": "toy", "params": {"noise": 0.1, "window": 0}},
        "encoder": {"name": "toy", "params": {"width": 8}, "n_leads": 3, "input_length": 32, "feature_dim": 8},
        "preprocessing": {
            "fs": FS, "window": 32, "lead_names": list(LEADS),
            "normalization": {"mean": [0.0] * 3, "std": [1.0] * 3}, "units": "mV",
        },
        "label_set": None,
        "label_vocabulary": None,
        "config": {"method.name": "toy", "seed": 0},
        **extra,
    }


def toy_store(n: int = 24, length: int = 60, seed: int = 0) -> SignalStore:
    rng = np.random.default_rng(seed)
    signals = [rng.normal(0, 0.5, (len(LEADS), length + (i % 5))).astype(np.float32) for i in range(n)]
    return SignalStore.from_signals(signals, LEADS, FS)


def toy_config(**overrides) -> TrialConfig:
    flat = {
        "method.name": "toy",
        "encoder.name": "toy",
        "augment.pipeline": "toy_jitter",
        "data.window": 32,
        "train.batch_size": 8,
        "train.epochs": 4,
        "optim.lr": 1e-2,
        "optim.grad_clip": 1.0,
        "seed": 3,
    }
    flat.update(overrides)
    return TrialConfig.from_flat(flat)


@pytest.fixture
def one_thread():
    """Small real models run fastest single-threaded; on a busy 2-core box, two OpenMP threads that
    spin-wait for each other make them 10-20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def spawn_ranks(worker: Callable[[int, str, str], None], tmp: Path, world: int) -> list[dict[str, Any]]:
    """Run `worker(rank, init_file, out_dir)` on `world` spawned gloo ranks; each saves `rank{r}.pt` in
    `out_dir`, returned in rank order."""
    mp.spawn(worker, args=(str(tmp / "rendezvous"), str(tmp)), nprocs=world, join=True)
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(world)]
