"""SimCLR (Chen et al. 2020) as in the paper's reference code (paper notes §4.1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ecg_tune.errors import ConfigError
from ecg_tune.ssl.encoders.base import Encoder
from ecg_tune.ssl.global_batchnorm import encode_views
from ecg_tune.ssl.heads import SimCLRProjectionHead
from ecg_tune.ssl.losses import nt_xent_logits
from ecg_tune.ssl.methods.base import Augment, Batch, Method


@dataclass
class SimCLRParams:
    temperature: float = 0.5  # NT-Xent temperature of the reference config
    proj_hidden: int = 512  # projection Linear(feature_dim, proj_hidden) -> ReLU -> Linear(., proj_dim)
    # The reference's out_dim is 16 (config model.out_dim), much smaller than SimCLR's usual 128;
    # kept as the default to reproduce the paper, and a natural sweep dimension.
    proj_dim: int = 16
    gather_distributed: bool = True  # negatives from the global batch under DDP (as the reference)

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ConfigError("method.temperature", f"must be > 0, got {self.temperature}")
        for key in ("proj_hidden", "proj_dim"):
            if getattr(self, key) < 1:
                raise ConfigError(f"method.{key}", f"must be >= 1, got {getattr(self, key)}")


class SimCLR(Method):
    """Two augmented views of each window; NT-Xent over the L2-normalised projections.

    BatchNorm statistics are per view, as in the reference (one forward pass per view); under global
    BatchNorm both views share one pass whose layers keep per-view statistics (`encode_views`).
    """

    shuffles_views = True  # its views go through encode_views one by one
    Params = SimCLRParams
    params: SimCLRParams

    def __init__(self, encoder: Encoder, params: SimCLRParams):
        super().__init__(encoder, params)
        self.projector = SimCLRProjectionHead(encoder.feature_dim, params.proj_hidden, params.proj_dim)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector(self.encoder(x)), dim=1)

    def training_step(self, batch: Batch, augment: Augment) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        z1, z2 = encode_views(self.embed, [augment(batch.x), augment(batch.x)], self)
        logits, targets = nt_xent_logits(z1, z2, self.params.temperature, self.params.gather_distributed)
        loss = F.cross_entropy(logits, targets)
        with torch.no_grad():
            accuracy = (logits.argmax(dim=1) == targets).float().mean()
        return loss, {"loss": loss.detach(), "contrastive_accuracy": accuracy}
