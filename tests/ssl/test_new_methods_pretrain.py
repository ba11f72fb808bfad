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
    if expected == "vit1d":  # MAE's own patch (a tenth of the 250-sample window); JEPA keeps vit1d's
        assert ckpt.header["encoder"]["params"]["patch_size"] == {"mae": 25, "jepa": 10}[method]
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


@pytest.mark.parametrize(("flat", "patch"), [
    ({"method.name": "mae"}, 25),  # MAE's preference: ten patches per evaluation window
    ({"method.name": "mae", "data.window": 500}, 50),
    ({"method.name": "mae", "encoder.patch_size": 10}, 10),  # an explicit encoder key wins
    ({"method.name": "jepa"}, 10),  # vit1d's own default
])
def test_method_encoder_defaults_yield_to_explicit_keys(flat: dict[str, object], patch: int) -> None:
    from ecg_tune.config import TrialConfig
    from ecg_tune.ssl.train_setup import build_trial_method

    cfg = TrialConfig.from_flat({"encoder.name": "vit1d", "encoder.dim": 16, "encoder.depth": 1, "encoder.heads": 2,
                                 **flat})
    method = build_trial_method(cfg, dict(cfg.method.params), 12, cfg.data.window)
    assert method.encoder.params.patch_size == patch


def test_method_encoder_defaults_skip_keys_the_encoder_lacks() -> None:
    from ecg_tune.config import TrialConfig
    from ecg_tune.ssl.train_setup import build_trial_method

    cfg = TrialConfig.from_flat({"method.name": "mae", "encoder.name": "xresnet1d50", "encoder.width": 8})
    from ecg_tune.errors import ConfigError

    # MAE's own refusal of a token-less encoder, not "unknown parameter encoder.patch_size" from its defaults.
    with pytest.raises(ConfigError, match="needs a patch-token encoder") as err:
        build_trial_method(cfg, dict(cfg.method.params), 12, cfg.data.window)
    assert err.value.key == "encoder.name"
