"""Classifier = input normalisation + encoder + feature standardisation + head; its optimiser groups.

The head never sees raw pooled features. Pooled features of a ReLU network are all ≥ 0 and share a
large common component; a bare `Linear` head trained with AdamW for few steps then moves every weight
of a class row with the same sign and ends up scoring roughly minus a record's total activation,
which on PTB-XL is anti-correlated with abnormality (issue #14: frozen random xresnet1d50 + linear head
0.45 macro AUC, a logistic regression on the same features 0.76). `FeatureScale` z-scores the
features with training-set statistics first. A linear head on standardised features is still a
linear function of the features (the statistics fold into its weights and bias), so the protocols
keep their meaning; the sweep's quick probe uses the same head.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ecg_tune.evaluate.task import MeanStd
from ecg_tune.ssl.encoders.base import Encoder
from ecg_tune.ssl.encoders.recipe import EvalRecipe


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


class FeatureScale(nn.Module):
    """Fixed per-feature z-score of pooled features, set once from training features (`fit`)."""

    mean: torch.Tensor
    std: torch.Tensor
    fitted: torch.Tensor

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def fit(self, features: torch.Tensor) -> None:
        features = features.float()
        self.mean.copy_(features.mean(dim=0))
        # A constant feature (a dead ReLU unit) is only centred; it carries no information either way.
        std = features.std(dim=0) if len(features) > 1 else torch.ones_like(self.std)
        self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))
        self.fitted.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def make_head(dim: int, n_classes: int, kind: str, recipe: EvalRecipe | None = None) -> nn.Module:
    """`linear`: Linear(dim, C). `mlp2`: the paper's CPC "2FC" head (§3.2): BN, Dropout(p/2),
    Linear(dim, hidden), ReLU, BN, Dropout(p), Linear(hidden, C)."""
    if kind == "linear":
        return nn.Linear(dim, n_classes)
    if kind == "mlp2":
        hidden = recipe.head_hidden if recipe is not None else 512
        p = recipe.head_dropout if recipe is not None else 0.5
        return nn.Sequential(
            nn.BatchNorm1d(dim), nn.Dropout(p / 2), nn.Linear(dim, hidden), nn.ReLU(inplace=True),
            nn.BatchNorm1d(hidden), nn.Dropout(p), nn.Linear(hidden, n_classes),
        )
    raise ValueError(f"unknown head {kind!r}; use linear or mlp2")


class Classifier(nn.Module):
    """mV windows (B, leads, T) → logits (B, C). With `frozen`, the encoder is a fixed feature map:
    no gradients, and eval mode even while the classifier trains (BN statistics stay as they are)."""

    encoder: Encoder

    def __init__(
        self, encoder: Encoder, n_classes: int, stats: MeanStd | None, n_leads: int, head: str = "linear",
        recipe: EvalRecipe | None = None,
    ):
        super().__init__()
        self.normalize = Normalize(stats, n_leads)
        self.encoder = encoder
        dim = int(encoder.feature_dim)
        self.scale = FeatureScale(dim)
        self.head = make_head(dim, n_classes, head, recipe)
        self.n_classes = n_classes
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

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Raw pooled encoder features of mV windows (what the feature cache holds)."""
        x = self.normalize(x)
        if self.frozen:
            with torch.no_grad():
                return self.encoder(x)
        return self.encoder(x)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from raw pooled features."""
        return self.head(self.scale(features.float()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.embed(x))


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
