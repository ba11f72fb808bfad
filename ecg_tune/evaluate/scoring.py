"""Sliding-window scoring: record probabilities and frozen window features.

Windows are cut chunk by chunk (a whole PTB-XL training split as float32 windows would be ~1.5 GB),
scored in eval mode without gradients, and aggregated to records (mean of sigmoid probabilities as in
the paper, or max).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from ecg_tune.evaluate.metrics import aggregate_windows
from ecg_tune.evaluate.noise import NoiseLevel, add_noise
from ecg_tune.evaluate.task import Task

CHUNK_RECORDS = 256  # records cut into windows at a time
FORWARD_BATCH = 512  # windows per forward pass


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put `module` in eval mode and restore every submodule's own training flag afterwards."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, flag in flags:
            m.training = flag


def module_device(module: nn.Module) -> torch.device:
    for param in module.parameters():
        return param.device
    for buffer in module.buffers():
        return buffer.device
    return torch.device("cpu")


def iter_windows(
    task: Task, rows: np.ndarray, device: torch.device, chunk_records: int = CHUNK_RECORDS
) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
    """(windows (n, leads, window) mV on `device`, positions in `rows`) for consecutive record chunks."""
    from ecg_tune.data.windows import sliding_windows

    for start in range(0, len(rows), chunk_records):
        chunk = rows[start : start + chunk_records]
        windows, pos = sliding_windows(
            task.store, chunk, window=task.window, stride=task.stride, lead_indices=task.lead_indices
        )
        yield (
            torch.from_numpy(np.ascontiguousarray(windows)).to(device),
            np.asarray(pos, dtype=np.int64) + start,
        )


@torch.no_grad()
def predict_records(
    model: nn.Module,
    task: Task,
    rows: np.ndarray,
    *,
    noise: str | NoiseLevel | None = None,
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """Record probabilities (len(rows), C): aggregate of sigmoid window outputs over sliding windows.

    `noise`: a level of `ecg_tune.evaluate.noise` added to every window (in mV) before the model.
    """
    device = module_device(model)
    probs, positions = [], []
    with eval_mode(model):
        for windows, pos in iter_windows(task, rows, device):
            if noise is not None:
                windows = add_noise(windows, noise, task.fs, generator)
            for i in range(0, len(windows), FORWARD_BATCH):
                probs.append(torch.sigmoid(model(windows[i : i + FORWARD_BATCH]).float()).cpu())
            positions.append(pos)
    scores = torch.cat(probs).numpy().astype(np.float64)
    return aggregate_windows(scores, np.concatenate(positions), len(rows), task.aggregate)


@torch.no_grad()
def window_features(
    encoder: nn.Module, task: Task, rows: np.ndarray, out_device: torch.device
) -> tuple[torch.Tensor, np.ndarray]:
    """Frozen pooled features (N, feature_dim) of all sliding windows of `rows`, and their record positions.

    The encoder stays on its own device and keeps its training flags and BN statistics (eval mode
    inside); `encoder` may be a Sequential(Normalize, Encoder).
    """
    device = module_device(encoder)
    feats, positions = [], []
    with eval_mode(encoder):
        for windows, pos in iter_windows(task, rows, device):
            for i in range(0, len(windows), FORWARD_BATCH):
                feats.append(encoder(windows[i : i + FORWARD_BATCH]).float().to(out_device))
            positions.append(pos)
    return torch.cat(feats), np.concatenate(positions)
