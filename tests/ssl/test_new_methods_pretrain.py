"""`ecg-tune pretrain --method M --epochs 1` without --encoder for the new methods (and CPC-S4), on the
synthetic data; the encoder checkpoint loads with torch.load(weights_only=True) and embeds a window."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ecg_tune.cli import main
from ecg_tune.ssl.checkpoint import load_checkpoint

TINY_VIT = ["encoder.dim=16", "encoder.depth=1", "encoder.heads=2"]
RUNS = {
    "mae": ["--set", *"method.decoder_dim=16 method.decoder_depth=1 method.decoder_heads=2".split()],
    "jepa": ["--set", *"method.predictor_depth=1 method.predictor_heads=2".split()],
    "cmsc": ["--set", "encoder.width=8"],
}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "data"
    assert main(["synth", str(out), "--records", "40", "--seed", "0"]) == 0
    return out


def sets(values: list[str]) -> list[str]:
    return [arg for value in values for arg in ("--set", value)]


@pytest.mark.parametrize("method", sorted(RUNS))
def test_pretrain_one_epoch_without_encoder(method: str, synthetic: Path, tmp_path: Path) -> None:
    extra = sets(TINY_VIT) if method in ("mae", "jepa") else []
    extra += sets(RUNS[method][1:])
    out = tmp_path / method
    args = ["pretrain", "--data", str(synthetic), "--method", method, "--epochs", "1", "--batch-size", "16",
            "--out", str(out), "--quiet", *extra]
    assert main(args) == 0
    path = out / "encoder.ckpt"
    torch.load(path, weights_only=True)  # plain tensors and python only
    ckpt = load_checkpoint(path)
    expected = {"mae": "vit1d", "jepa": "vit1d", "cmsc": "xresnet1d50"}[method]
    assert ckpt.header["encoder"]["name"] == expected and ckpt.header["method"]["name"] == method
    encoder = ckpt.build_encoder().eval()
    with torch.no_grad():
        features = encoder(torch.randn(2, encoder.n_leads, 250))
    assert features.shape == (2, encoder.feature_dim) and torch.isfinite(features).all()
    # The full training state (EMA target, decoder, predictor) rebuilds too.
    assert type(load_checkpoint(out / "last.ckpt").build_method()).__name__.lower() == method


def test_pretrain_cpc_on_s4d(synthetic: Path, tmp_path: Path) -> None:
    args = ["pretrain", "--data", str(synthetic), "--method", "cpc", "--encoder", "s4d", "--epochs", "1",
            "--batch-size", "16", "--out", str(tmp_path), "--quiet",
            *sets(["encoder.d_model=16", "encoder.layers=1", "encoder.local_layers=1", "method.n_negatives=8",
                   "method.input_length=500"])]
    assert main(args) == 0
    encoder = load_checkpoint(tmp_path / "encoder.ckpt").build_encoder().eval()
    with torch.no_grad():
        assert encoder(torch.randn(1, encoder.n_leads, 250)).shape == (1, 48)
