"""A self-contained module that embeds raw ECG arrays with a trained encoder.

It applies the checkpoint's preprocessing (per-lead normalisation, sliding windows of the training
window length) and averages the pooled window features per record, so a user can call it on raw
(batch, leads, time) millivolt arrays at the checkpoint's sampling rate. It is exported as TorchScript
so the registered model loads without ecg-tune installed.
"""

from __future__ import annotations

import torch
from torch import nn


class Embedder(nn.Module):
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
