"""xresnet1d50 / xresnet1d101: the narrow 1-d ResNet used for ECGs (paper notes §3.1).

Unlike the image ResNet50 (25 M parameters), every stage keeps an inner width of 64 (256 channels out),
so the 12-lead body has about 0.89 M (50) / 1.80 M (101) parameters. Features are the concatenation of
global max and average pooling of the last stage: 2 * width * expansion = 512.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ecg_tune.errors import ConfigError
from ecg_tune.ssl.encoders.base import Encoder

STEM_WIDTHS = (32, 32, 64)


@dataclass
class XResNetParams:
    width: int = 64  # inner width of every bottleneck block (the same in all four stages)
    expansion: int = 4  # block output channels = width * expansion
    kernel_size: int = 5  # stem convs and the middle conv of each bottleneck; odd keeps lengths aligned


class ConvBN(nn.Module):
    """Conv (no bias: BN follows) -> BN -> optional ReLU."""

    def __init__(self, ni: int, nf: int, kernel_size: int, stride: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv1d(ni, nf, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm1d(nf)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """1x1 -> k (strided) -> 1x1 branch plus a shortcut (AvgPool when strided, 1x1 conv+BN when widened)."""

    def __init__(self, ni: int, nh: int, nf: int, stride: int, kernel_size: int):
        super().__init__()
        self.branch = nn.Sequential(
            ConvBN(ni, nh, 1),
            ConvBN(nh, nh, kernel_size, stride=stride),
            ConvBN(nh, nf, 1, act=False),
        )
        shortcut: list[nn.Module] = []
        if stride != 1:
            # ceil_mode gives ceil(T/2) steps, the same as the strided "same"-padded conv of the branch.
            shortcut.append(nn.AvgPool1d(2, ceil_mode=True))
        if ni != nf:
            shortcut.append(ConvBN(ni, nf, 1, act=False))
        self.shortcut = nn.Sequential(*shortcut)  # empty Sequential = identity
        self.act = nn.ReLU(inplace=True)

    @property
    def last_bn(self) -> nn.BatchNorm1d:
        bn = self.branch[-1].bn
        assert isinstance(bn, nn.BatchNorm1d)
        return bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.branch(x) + self.shortcut(x))


class XResNet1d(Encoder):
    Params = XResNetParams
    blocks_per_stage: ClassVar[tuple[int, ...]] = (3, 4, 6, 3)

    @classmethod
    def min_length(cls, params: XResNetParams) -> int:
        # Below this the last stage sees a single step; shorter inputs still run but are not useful.
        return 16

    def __init__(self, params: XResNetParams, n_leads: int, input_length: int):
        super().__init__(params, n_leads, input_length)
        for key in ("width", "expansion", "kernel_size"):
            if getattr(params, key) < 1:
                raise ConfigError(f"encoder.{key}", f"must be >= 1, got {getattr(params, key)}")
        if params.kernel_size % 2 == 0:
            raise ConfigError("encoder.kernel_size", f"must be odd, got {params.kernel_size}")
        ks = params.kernel_size
        widths = (n_leads, *STEM_WIDTHS)
        stem: list[nn.Module] = [
            ConvBN(ni, nf, ks, stride=2 if i == 0 else 1)
            for i, (ni, nf) in enumerate(zip(widths, widths[1:]))
        ]
        stem.append(nn.MaxPool1d(3, stride=2, padding=1))
        self.stem = nn.Sequential(*stem)

        nf = params.width * params.expansion
        ni = STEM_WIDTHS[-1]
        stages = []
        for s, n_blocks in enumerate(self.blocks_per_stage):
            blocks = []
            for b in range(n_blocks):
                blocks.append(Bottleneck(ni, params.width, nf, 2 if s > 0 and b == 0 else 1, ks))
                ni = nf
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.feature_dim = 2 * nf
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm1d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Zero gamma on each branch's last BN: each block starts as relu(shortcut(x)) (stabler early training).
        for block in self.blocks():
            nn.init.zeros_(block.last_bn.weight)

    def blocks(self) -> list[Bottleneck]:
        return [b for stage in self.stages for b in stage.children() if isinstance(b, Bottleneck)]

    def forward_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps after the stem and after each stage: (B, C, T') each, input to output."""
        maps = [self.stem(x)]
        for stage in self.stages:
            maps.append(stage(maps[-1]))
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.forward_maps(x)[-1]
        return torch.cat([h.amax(dim=-1), h.mean(dim=-1)], dim=1)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        return [list(self.stem.parameters())] + [list(stage.parameters()) for stage in self.stages]


class XResNet1d50(XResNet1d):
    blocks_per_stage = (3, 4, 6, 3)


class XResNet1d101(XResNet1d):
    blocks_per_stage = (3, 4, 23, 3)
