"""A self-contained module that embeds raw ECG arrays with a trained encoder.

It applies the checkpoint's preprocessing (per-lead normalisation, sliding windows of the training
window length) and averages the pooled window features per record, so a user can call it on raw
(batch, leads, time) millivolt arrays at the checkpoint's sampling rate. It is exported as TorchScript
so the registered model loads without ecg-tune installed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ecg_tune.errors import CheckpointError


class Embedder(nn.Module):
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, encoder: nn.Module, window: int, stride: int, mean: torch.Tensor | None, std: torch.Tensor | None):
        super().__init__()
        self.encoder = encoder.eval()
        self.window = int(window)
        self.stride = int(stride)
        n_leads = int(getattr(encoder, "n_leads", 12))
        self.register_buffer("mean", (mean if mean is not None else torch.zeros(n_leads)).float().view(1, -1, 1))
        self.register_buffer("std", (std if std is not None else torch.ones(n_leads)).float().view(1, -1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, leads, T) mV with T >= window → (B, feature_dim), the mean over sliding windows."""
        x = (x.float() - self.mean) / self.std
        b, leads = x.shape[0], x.shape[1]
        windows = x.unfold(2, self.window, self.stride)  # (B, L, nW, W)
        n = windows.shape[2]
        flat = windows.permute(0, 2, 1, 3).reshape(b * n, leads, self.window)
        feats = self.encoder(flat)
        return feats.reshape(b, n, -1).mean(dim=1)


def script_embedder(embedder: Embedder, example: torch.Tensor) -> torch.jit.ScriptModule:
    with torch.no_grad():
        return torch.jit.trace(embedder.eval(), example, check_trace=False)


def embedder_from_checkpoint(path: str | Path) -> tuple[Embedder, dict[str, Any]]:
    """The Embedder of an encoder checkpoint (its window, eval stride and normalisation) and its header."""
    from ecg_tune.ssl.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    header = ckpt.header
    pre = header["preprocessing"]
    norm = pre.get("normalization")
    mean = torch.tensor(norm["mean"]) if norm else None
    std = torch.tensor(norm["std"]) if norm else None
    stride = int(header.get("config", {}).get("data.eval_stride", max(1, int(pre["window"]) // 2)))
    return Embedder(ckpt.build_encoder(), int(pre["window"]), stride, mean, std), header


@torch.no_grad()
def embed_dataset(
    model: Callable[[torch.Tensor], torch.Tensor], dataset: Any, *, fs: float, lead_names: Sequence[str], window: int,
    batch_records: int = 64,
) -> tuple[list[str], np.ndarray, list[str]]:
    """(record ids, embeddings (n, dim) float32, skipped record ids) of every record of `dataset` at
    least `window` samples long, embedded by `model` (an Embedder or its TorchScript export) on the
    records' full signals. Records of one length are embedded together."""
    if not np.isclose(float(dataset.fs), float(fs)):
        raise CheckpointError(f"the encoder expects {float(fs):g} Hz, {dataset.path} is at {float(dataset.fs):g} Hz")
    missing = [n for n in lead_names if n not in dataset.lead_names]
    if missing:
        raise CheckpointError(f"{dataset.path} lacks the encoder's lead(s) {', '.join(missing)}")
    columns = [list(dataset.lead_names).index(n) for n in lead_names]
    store = dataset.store
    ids = [str(r) for r in dataset.records["record_id"]]
    lengths = np.asarray(store.lengths)
    kept = np.flatnonzero(lengths >= window)
    skipped = [ids[i] for i in np.flatnonzero(lengths < window)]
    out_ids: list[str] = []
    chunks: list[np.ndarray] = []
    for length in np.unique(lengths[kept]):
        rows = kept[lengths[kept] == length]
        for start in range(0, len(rows), batch_records):
            part = rows[start : start + batch_records]
            x = np.stack([store.signal(int(r))[columns] for r in part]).astype(np.float32)  # (B, leads, T)
            chunks.append(model(torch.from_numpy(x)).float().numpy())
            out_ids += [ids[int(r)] for r in part]
    dim = chunks[0].shape[1] if chunks else 0
    return out_ids, (np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)), skipped
