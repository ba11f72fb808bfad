"""Supervised baseline: the same encoders trained end to end on multi-label targets."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ecg_tune.errors import ConfigError
from ecg_tune.ssl.encoders.base import Encoder
from ecg_tune.ssl.heads import ClassificationHead
from ecg_tune.ssl.methods.base import Augment, Batch, Method


@dataclass
class SupervisedParams:
    n_classes: int = 71  # set by the caller from the label set (71 = PTB-XL "all statements")
    head_hidden: int = 0  # 0 = linear head; > 0 = the paper's "2FC" head with this hidden width
    dropout: float = 0.0
    use_augment: bool = False  # train on the trainer's augmented views instead of clean windows

    def __post_init__(self) -> None:
        if self.n_classes < 1:
            raise ConfigError("method.n_classes", f"must be >= 1, got {self.n_classes}")
        if self.head_hidden < 0:
            raise ConfigError("method.head_hidden", f"must be >= 0, got {self.head_hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("method.dropout", f"must be in [0, 1), got {self.dropout}")


class Supervised(Method):
    """Encoder -> head -> BCE-with-logits against the multi-hot `batch.y`."""

    Params = SupervisedParams
    params: SupervisedParams
    needs_labels = True
    sync_batchnorm = False  # a per-sample loss: each rank normalises its own slice, as plain DDP

    def __init__(self, encoder: Encoder, params: SupervisedParams):
        super().__init__(encoder, params)
        self.head = ClassificationHead(
            encoder.feature_dim, params.n_classes, params.head_hidden, params.dropout
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def training_step(self, batch: Batch, augment: Augment) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if batch.y is None:
            raise ValueError("supervised training needs batch.y (multi-hot targets)")
        x = augment(batch.x) if self.params.use_augment else batch.x
        logits = self(x).float()
        loss = F.binary_cross_entropy_with_logits(logits, batch.y.to(logits.dtype))
        return loss, {"loss": loss.detach()}
