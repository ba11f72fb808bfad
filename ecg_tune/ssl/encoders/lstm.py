"""LSTM baseline (BENCH `rnn1d`, paper notes §10): a unidirectional 2-layer LSTM, hidden 256.

As a sequence encoder its per-step "local" features are the raw samples (B, T, leads) and its context is
the LSTM output (B, T, hidden). Pooled features: concat(mean, max, last step) = 3 * hidden.
The helpers here are shared with the CPC encoders.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ecg_tune.errors import ConfigError
from ecg_tune.ssl.encoders.base import Encoder


@dataclass
class LSTMParams:
    hidden: int = 256
    layers: int = 2


def concat_pool_time(c: torch.Tensor) -> torch.Tensor:
    """(B, T, D) -> (B, 3D): mean, max and last step over time (fastai's AdaptiveConcatPoolRNN order)."""
    return torch.cat([c.mean(dim=1), c.amax(dim=1), c[:, -1]], dim=1)


def lstm_layer_groups(lstm: nn.LSTM) -> list[list[nn.Parameter]]:
    """One group per stacked layer: nn.LSTM keeps all layers in one module (one fused kernel) and names
    each layer's tensors with an `_l{k}` suffix."""
    return [
        [p for name, p in lstm.named_parameters() if name.endswith(f"_l{k}")] for k in range(lstm.num_layers)
    ]


def check_positive(**values: int) -> None:
    for key, value in values.items():
        if value < 1:
            raise ConfigError(f"encoder.{key}", f"must be >= 1, got {value}")


class LSTMEncoder(Encoder):
    Params = LSTMParams
    is_sequence = True

    @classmethod
    def min_length(cls, params: LSTMParams) -> int:
        return 1

    def __init__(self, params: LSTMParams, n_leads: int, input_length: int):
        super().__init__(params, n_leads, input_length)
        check_positive(hidden=params.hidden, layers=params.layers)
        self.lstm = nn.LSTM(n_leads, params.hidden, num_layers=params.layers, batch_first=True)
        self.local_dim = n_leads
        self.context_dim = params.hidden
        self.feature_dim = 3 * params.hidden

    def forward_local(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)

    def forward_context(self, z: torch.Tensor) -> torch.Tensor:
        return self.lstm(z)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return concat_pool_time(self.forward_context(self.forward_local(x)))

    def layer_groups(self) -> list[list[nn.Parameter]]:
        return lstm_layer_groups(self.lstm)
