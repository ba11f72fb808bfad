"""Inception1d baseline (BENCH `inception1d`, paper notes §10).

Six inception blocks; each has a 1x1 bottleneck (32) feeding parallel convolutions with kernels
39, 19, 9 (32 filters each) plus a MaxPool(3) -> 1x1 conv branch, then BN + ReLU over the 128 concatenated
channels. A residual shortcut (1x1 conv + BN, then ReLU) spans every three blocks. Pooled features:
concat(max, avg) over time = 2 * 4 * filters = 256. The time axis is never downsampled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ecg_tune.errors import ConfigError
from ecg_tune.ssl.encoders.base import Encoder
from ecg_tune.ssl.encoders.lstm import check_positive

BLOCKS_PER_RESIDUAL = 3


@dataclass
class InceptionParams:
    filters: int = 32  # per branch; a block outputs (len(kernels) + 1) * filters channels
    bottleneck: int = 32  # 0 = no bottleneck: the convolutions see the block input directly
    depth: int = 6
    kernels: list[int] = field(default_factory=lambda: [39, 19, 9])  # odd, so lengths are kept
    residual: bool = True


class InceptionBlock(nn.Module):
    def __init__(self, ni: int, filters: int, bottleneck: int, kernels: list[int]):
        super().__init__()
        self.bottleneck = nn.Conv1d(ni, bottleneck, 1, bias=False) if bottleneck > 0 else nn.Identity()
        nb = bottleneck if bottleneck > 0 else ni
        self.convs = nn.ModuleList([nn.Conv1d(nb, filters, k, padding=k // 2, bias=False) for k in kernels])
        self.pool_branch = nn.Sequential(
            nn.MaxPool1d(3, stride=1, padding=1), nn.Conv1d(ni, filters, 1, bias=False)
        )
        self.bn = nn.BatchNorm1d(filters * (len(kernels) + 1))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.bottleneck(x)
        out = torch.cat([conv(b) for conv in self.convs] + [self.pool_branch(x)], dim=1)
        return self.act(self.bn(out))


class Shortcut(nn.Module):
    """relu(out + BN(conv1x1(block-group input)))."""

    def __init__(self, ni: int, nf: int):
        super().__init__()
        self.conv = nn.Conv1d(ni, nf, 1, bias=False)
        self.bn = nn.BatchNorm1d(nf)
        self.act = nn.ReLU(inplace=True)

    def forward(self, inp: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return self.act(out + self.bn(self.conv(inp)))


class Inception1d(Encoder):
    Params = InceptionParams

    @classmethod
    def min_length(cls, params: InceptionParams) -> int:
        return 1

    def __init__(self, params: InceptionParams, n_leads: int, input_length: int):
        super().__init__(params, n_leads, input_length)
        check_positive(filters=params.filters, depth=params.depth)
        if params.bottleneck < 0:
            raise ConfigError("encoder.bottleneck", f"must be >= 0, got {params.bottleneck}")
        if not params.kernels or any(k < 1 or k % 2 == 0 for k in params.kernels):
            raise ConfigError("encoder.kernels", f"need odd kernel sizes >= 1, got {params.kernels}")
        if params.residual and params.depth % BLOCKS_PER_RESIDUAL != 0:
            raise ConfigError("encoder.depth", f"must be a multiple of 3 with residual, got {params.depth}")
        nf = params.filters * (len(params.kernels) + 1)
        self.blocks = nn.ModuleList(
            [
                InceptionBlock(n_leads if d == 0 else nf, params.filters, params.bottleneck, params.kernels)
                for d in range(params.depth)
            ]
        )
        n_shortcuts = params.depth // BLOCKS_PER_RESIDUAL if params.residual else 0
        self.shortcuts = nn.ModuleList([Shortcut(n_leads if i == 0 else nf, nf) for i in range(n_shortcuts)])
        self.feature_dim = 2 * nf

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        """(B, leads, T) -> (B, channels, T)."""
        res = x
        for d, block in enumerate(self.blocks):
            x = block(x)
            if self.shortcuts and d % BLOCKS_PER_RESIDUAL == BLOCKS_PER_RESIDUAL - 1:
                x = self.shortcuts[d // BLOCKS_PER_RESIDUAL](res, x)
                res = x
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.forward_maps(x)
        return torch.cat([h.amax(dim=-1), h.mean(dim=-1)], dim=1)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """One group per residual unit of three blocks (with its shortcut)."""
        groups = []
        for g in range(0, len(self.blocks), BLOCKS_PER_RESIDUAL):
            group = [p for block in self.blocks[g : g + BLOCKS_PER_RESIDUAL] for p in block.parameters()]
            if g // BLOCKS_PER_RESIDUAL < len(self.shortcuts):
                group += list(self.shortcuts[g // BLOCKS_PER_RESIDUAL].parameters())
            groups.append(group)
        return groups
