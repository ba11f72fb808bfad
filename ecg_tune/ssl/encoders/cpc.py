"""CPC encoders (paper notes §3.2): a per-step local encoder followed by an LSTM context network.

- `cpc_fc` ("4FC+2LSTM", the paper's model): 4 x [Conv1d k=1 (no bias), BN, ReLU], one token per sample.
- `cpc_conv`: strided convolutions (kernels 10,4,4,4, strides 2,2,2,2, no padding: every token sees
  only real samples), one token per 16 samples.

Context: unidirectional LSTM, batch_first. Pooled features: concat(mean, max, last) of the LSTM
outputs = 3 * hidden (1536). The pretraining projection Linear(hidden -> hidden, no bias) from context
to local space belongs to the CPC method, not here (it adds 0.26 M to reach the 5.26 M / 7.68 M totals
quoted in anchor notes §4.3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from ecg_tune.errors import ConfigError
from ecg_tune.ssl.encoders.base import Encoder
from ecg_tune.ssl.encoders.lstm import check_positive, concat_pool_time
from ecg_tune.ssl.encoders.recipe import CPC, EvalRecipe


@dataclass
class CPCFCParams:
    hidden: int = 512  # channels of the local encoder and hidden size of the LSTM
    lstm_layers: int = 2
    local_layers: int = 4


@dataclass
class CPCConvParams:
    hidden: int = 512
    lstm_layers: int = 2
    kernels: list[int] = field(default_factory=lambda: [10, 4, 4, 4])
    strides: list[int] = field(default_factory=lambda: [2, 2, 2, 2])


def conv_bn_relu(ni: int, nf: int, kernel_size: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(ni, nf, kernel_size, stride=stride, bias=False), nn.BatchNorm1d(nf), nn.ReLU(inplace=True)
    )


class CPCEncoder(Encoder):
    """Shared part: `self.local` maps (B, leads, T) to (B, hidden, T'); an LSTM gives the context."""

    is_sequence = True
    eval_recipe: ClassVar[EvalRecipe] = CPC
    local: nn.Sequential

    def _build_context(self, hidden: int, layers: int) -> None:
        self.lstm = nn.LSTM(hidden, hidden, num_layers=layers, batch_first=True)
        self.local_dim = hidden
        self.context_dim = hidden
        self.feature_dim = 3 * hidden

    def forward_local(self, x: torch.Tensor) -> torch.Tensor:
        return self.local(x).transpose(1, 2)

    def forward_context(self, z: torch.Tensor) -> torch.Tensor:
        return self.lstm(z)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return concat_pool_time(self.forward_context(self.forward_local(x)))

    def layer_groups(self) -> list[list[nn.Parameter]]:
        # Two groups as in the paper's CPC finetuning (§6.2): local encoder, then the whole LSTM.
        return [list(self.local.parameters()), list(self.lstm.parameters())]


class CPCFC(CPCEncoder):
    Params = CPCFCParams

    @classmethod
    def min_length(cls, params: CPCFCParams) -> int:
        return 1

    def __init__(self, params: CPCFCParams, n_leads: int, input_length: int):
        super().__init__(params, n_leads, input_length)
        check_positive(hidden=params.hidden, lstm_layers=params.lstm_layers, local_layers=params.local_layers)
        widths = [n_leads] + [params.hidden] * params.local_layers
        self.local = nn.Sequential(*[conv_bn_relu(ni, nf, 1, 1) for ni, nf in zip(widths, widths[1:])])
        self._build_context(params.hidden, params.lstm_layers)


class CPCConv(CPCEncoder):
    Params = CPCConvParams

    @classmethod
    def min_length(cls, params: CPCConvParams) -> int:
        # Invert L_out = (L_in - k) // s + 1 from one output step back to the input.
        need = 1
        for k, s in zip(reversed(params.kernels), reversed(params.strides)):
            need = (need - 1) * s + k
        return need

    def __init__(self, params: CPCConvParams, n_leads: int, input_length: int):
        super().__init__(params, n_leads, input_length)
        check_positive(hidden=params.hidden, lstm_layers=params.lstm_layers)
        if not params.kernels or len(params.kernels) != len(params.strides):
            raise ConfigError(
                "encoder.strides", f"need one stride per kernel, got {params.kernels} and {params.strides}"
            )
        if min(params.kernels) < 1 or min(params.strides) < 1:
            raise ConfigError("encoder.kernels", "kernels and strides must be >= 1")
        widths = [n_leads] + [params.hidden] * len(params.kernels)
        self.local = nn.Sequential(
            *[
                conv_bn_relu(ni, nf, k, s)
                for ni, nf, k, s in zip(widths, widths[1:], params.kernels, params.strides)
            ]
        )
        self._build_context(params.hidden, params.lstm_layers)
