"""Common interface of encoders: pooled features, and per-step features for sequence models."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ecg_tune.ssl.encoders.recipe import XRESNET, EvalRecipe


class Encoder(nn.Module):
    """Maps (B, leads, T) to pooled features (B, feature_dim).

    Sequence encoders (CPC's "4FC+2LSTM", the LSTM baseline) set `is_sequence = True` and also give
    `forward_local(x) -> z (B, T', local_dim)` (per-step encoder output) and
    `forward_context(z) -> c (B, T', context_dim)` (autoregressive context).
    `layer_groups()` lists parameter groups from input to output for discriminative learning rates.
    `eval_recipe` is how the paper evaluates this architecture (head, learning rates, epochs).
    """

    Params: ClassVar[type]
    is_sequence: ClassVar[bool] = False
    eval_recipe: ClassVar[EvalRecipe] = XRESNET
    feature_dim: int
    local_dim: int = 0
    context_dim: int = 0

    def __init__(self, params: Any, n_leads: int, input_length: int):
        super().__init__()
        self.params = params
        self.n_leads = n_leads
        self.input_length = input_length

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_local(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} is not a sequence encoder")

    def forward_context(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} is not a sequence encoder")

    def layer_groups(self) -> list[list[nn.Parameter]]:
        return [list(self.parameters())]
