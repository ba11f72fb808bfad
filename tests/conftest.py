"""Shared fixtures: paths to the real ECG samples in ../shared/data (skipped with a reason if absent); a
toy plug-in distribution (method, encoder, protocol) installed by entry points."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ECG_TUNE_SHARED_DATA", REPO.parent / "shared" / "data"))


def _sample(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real ECG sample {path} is absent (set ECG_TUNE_SHARED_DATA to its folder)")
    return path


@pytest.fixture(scope="session")
def ptbxl_root() -> Path:
    return _sample("ptb-xl-sample")


@pytest.fixture(scope="session")
def cinc_root() -> Path:
    return _sample("cinc-sample")


TOY_MODULE = '''
"""A toy ecg-tune plug-in written by the tests: one method, one encoder, one protocol."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from ecg_tune.evaluate.protocols.base import Protocol
from ecg_tune.ssl.encoders.base import Encoder
from ecg_tune.ssl.methods.base import Method


@dataclasses.dataclass
class ToyEncoderParams:
    width: int = 8


class ToyEncoder(Encoder):
    """One convolution and a mean over time (a test plug-in)."""

    Params = ToyEncoderParams

    @classmethod
    def min_length(cls, params: ToyEncoderParams) -> int:
        return 4

    def __init__(self, params: ToyEncoderParams, n_leads: int, input_length: int):
        super().__init__(params, n_leads, input_length)
        self.conv = nn.Conv1d(n_leads, params.width, 5, padding=2)
        self.feature_dim = params.width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(-1)


@dataclasses.dataclass
class ToyMethodParams:
    spread_weight: float = 1.0
    nan_after_steps: int = 0  # > 0: the loss turns NaN after this many steps (a divergence, on purpose)


class ToyMethod(Method):
    """Agreement of two augmented views plus unit spread (a test plug-in)."""

    Params = ToyMethodParams
    default_encoder = "toy_enc"

    def __init__(self, encoder: Encoder, params: ToyMethodParams):
        super().__init__(encoder, params)
        self.head = nn.Linear(encoder.feature_dim, 4)
        self.steps = 0

    def training_step(self, batch, augment):
        z1 = self.head(self.encoder(augment(batch.x)))
        z2 = self.head(self.encoder(augment(batch.x)))
        loss = F.mse_loss(z1, z2) + self.params.spread_weight * (z1.std(0) - 1).pow(2).mean()
        self.steps += 1
        if 0 < self.params.nan_after_steps < self.steps:
            loss = loss * float("nan")
        return loss, {}


class ToyProtocol(Protocol):
    """Linear evaluation cut to one epoch (a test plug-in)."""

    uses = ("evaluation.bootstrap",)

    def run(self, model, dataset, setup):
        from ecg_tune.evaluate.protocols.linear import Linear

        short = dataclasses.replace(setup, eval_cfg=dataclasses.replace(setup.eval_cfg, linear_epochs=1))
        result = Linear().run(model, dataset, short)
        result.protocol = "toy-protocol"
        return result
'''

ENTRY_POINTS = """\
[ecg_tune.methods]
toy = toy_ecg_plugin:ToyMethod

[ecg_tune.encoders]
toy_enc = toy_ecg_plugin:ToyEncoder

[ecg_tune.protocols]
toy-protocol = toy_ecg_plugin:ToyProtocol
"""


def write_plugin(root: Path) -> Path:
    """A plug-in distribution as pip would install it: the module plus its dist-info entry points."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "toy_ecg_plugin.py").write_text(textwrap.dedent(TOY_MODULE))
    info = root / "toy_ecg_plugin-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-ecg-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return root


@pytest.fixture(scope="session")
def plugin_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_plugin(tmp_path_factory.mktemp("plugin"))


@pytest.fixture
def toy_plugin(plugin_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The toy distribution on this process's path (and on the path of any process it starts)."""
    monkeypatch.syspath_prepend(str(plugin_root))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(plugin_root), os.environ.get("PYTHONPATH")) if p))
    return plugin_root
