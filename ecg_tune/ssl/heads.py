"""Projection, prediction, prototype and classification heads of the methods (shapes as in the paper).

All heads map (B, in_dim) to (B, out_dim). Layer choices follow the reference code (paper notes §4):
SimCLR has no BatchNorm in its projection; BYOL's projector and predictor are Linear (no bias, since
BatchNorm follows) -> BN -> ReLU -> Linear; SwAV's projection is Linear -> BN -> ReLU -> Linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SimCLRProjectionHead(nn.Sequential):
    """Linear(in, hidden) -> ReLU -> Linear(hidden, out). Paper: 512 -> 512 -> 16."""

    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 16):
        super().__init__(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))


class BYOLHead(nn.Sequential):
    """Linear(in, hidden, no bias) -> BN -> ReLU -> Linear(hidden, out): BYOL's projector and predictor."""

    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 16):
        super().__init__(
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )


class SwAVProjectionHead(nn.Sequential):
    """Linear(in, hidden) -> BN -> ReLU -> Linear(hidden, out). Paper: 512 -> 2048 -> 128."""

    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 128):
        super().__init__(
            nn.Linear(in_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )


class SwAVPrototypes(nn.Module):
    """K prototype vectors (rows of a bias-free Linear); scores are cosines once both sides are unit norm."""

    def __init__(self, in_dim: int = 128, n_prototypes: int = 3000):
        super().__init__()
        self.layer = nn.Linear(in_dim, n_prototypes, bias=False)

    @torch.no_grad()
    def normalize(self) -> None:
        """Project every prototype back onto the unit sphere (SwAV does this before each step)."""
        self.layer.weight.copy_(F.normalize(self.layer.weight, dim=1))

    def forward(self, z: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """Scores (B, K) in float32 even under autocast: they are divided by SwAV's temperature 0.1 and
        by Sinkhorn's epsilon 0.05, which would magnify bfloat16's ~0.4% rounding."""
        # Frozen: the prototypes take part in the forward pass but receive no gradient (grad stays None,
        # so the optimiser leaves them alone), as SwAV does during its first epoch.
        weight = self.layer.weight.detach() if frozen else self.layer.weight
        with torch.autocast(z.device.type, enabled=False):
            return F.linear(z.float(), weight.float())


class ClassificationHead(nn.Sequential):
    """Supervised head on pooled features.

    hidden_dim 0: Dropout(p) -> Linear(in, n_classes) (Dropout omitted when p = 0).
    hidden_dim > 0: the paper's "2FC" head: BN -> Dropout(p/2) -> Linear(in, hidden) -> ReLU -> BN ->
    Dropout(p) -> Linear(hidden, n_classes).
    """

    def __init__(self, in_dim: int, n_classes: int, hidden_dim: int = 0, dropout: float = 0.0):
        layers: list[nn.Module] = []
        if hidden_dim > 0:
            layers += [nn.BatchNorm1d(in_dim)]
            if dropout > 0:
                layers += [nn.Dropout(dropout / 2)]
            layers += [nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.BatchNorm1d(hidden_dim)]
            in_dim = hidden_dim
        if dropout > 0:
            layers += [nn.Dropout(dropout)]
        layers += [nn.Linear(in_dim, n_classes)]
        super().__init__(*layers)
