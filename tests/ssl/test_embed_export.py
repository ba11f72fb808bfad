"""Every registered encoder exports to the TorchScript embedder that the registry logs (tune/model_registry.py).

The export is `script_embedder(Embedder(...))` saved with `torch.jit.save` (what MLflow's pickle format
stores) and loaded back. Its output is compared with an eager reference written here: per-lead
normalisation, windows at every `stride` samples, the encoder on each window, the mean per record.
Inputs of another batch size and length than the trace example check that nothing was frozen into
the trace.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
import torch

from ecg_tune.ssl.embed import Embedder, script_embedder
from ecg_tune.ssl.encoders import ENCODERS, build_encoder

WINDOW, STRIDE, LEADS = 64, 32, 12

SMALL = {
    "xresnet1d50": {"width": 4},
    "xresnet1d101": {"width": 4},
    "cpc_fc": {"hidden": 16, "lstm_layers": 1, "local_layers": 2},
    "cpc_conv": {"hidden": 16, "lstm_layers": 1},
    "inception1d": {"filters": 4, "bottleneck": 4, "depth": 3},
    "lstm": {"hidden": 16, "layers": 1},
    "vit1d": {"dim": 32, "depth": 2, "heads": 4, "patch_size": 8},
    "vit1d-learned": {"dim": 32, "depth": 2, "heads": 4, "patch_size": 8, "positions": "learned"},
    "s4d": {"d_model": 16, "d_state": 4, "layers": 2, "local_layers": 1},
    "s4d-bidirectional": {"d_model": 16, "d_state": 4, "layers": 2, "local_layers": 1, "mode": "bidirectional"},
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_every_registered_encoder_is_covered() -> None:
    assert set(ENCODERS.names()) <= {key.split("-")[0] for key in SMALL}


def eager_reference(encoder: torch.nn.Module, x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    z = (x - mean[None, :, None]) / std[None, :, None]
    starts = range(0, x.shape[-1] - WINDOW + 1, STRIDE)
    with torch.no_grad():
        per_window = [encoder(z[:, :, s : s + WINDOW]) for s in starts]
    return torch.stack(per_window, dim=1).mean(dim=1)


@pytest.mark.parametrize("key", sorted(SMALL))
def test_torchscript_export_matches_eager(key: str) -> None:
    torch.manual_seed(0)
    encoder = build_encoder(key.split("-")[0], SMALL[key], LEADS, WINDOW).eval()
    mean, std = torch.randn(LEADS) * 0.1, torch.rand(LEADS) + 0.5
    scripted = script_embedder(Embedder(encoder, WINDOW, STRIDE, mean, std), torch.zeros(2, LEADS, WINDOW * 4))
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)

    generator = torch.Generator().manual_seed(1)
    for batch, length in [(2, WINDOW * 4), (3, WINDOW * 3 + 7), (1, WINDOW)]:
        x = torch.randn(batch, LEADS, length, generator=generator)
        expected = eager_reference(encoder, x, mean, std)
        with torch.no_grad():
            got = loaded(x)
        assert got.shape == (batch, encoder.feature_dim)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
