"""Checkpoint files: atomic writes, corruption and mismatch detection, rebuilding encoder and method."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
import torch

import ecg_tune
from ecg_tune.errors import CheckpointError
from ecg_tune.ssl import checkpoint as ckpt_mod
from ecg_tune.ssl.checkpoint import Checkpoint, export_encoder, load_checkpoint, save_checkpoint
from tests.ssl.conftest import LEADS, ToyEncoder, ToyEncoderParams, ToyMethod, ToyMethodParams
from tests.ssl.conftest import toy_header as train_toy_header


def toy_header() -> dict:
    return train_toy_header(epoch=2, step=6, metrics={"loss": 0.5})


def toy_method(seed: int = 0) -> ToyMethod:
    torch.manual_seed(seed)
    return ToyMethod(ToyEncoder(ToyEncoderParams(), 3, 32), ToyMethodParams())


def save_toy(path: Path, seed: int = 0) -> ToyMethod:
    method = toy_method(seed)
    save_checkpoint(path, toy_header(), {"method": method.state_dict(), "extra": {"step": 6, 1: [torch.ones(2)]}})
    return method


def test_round_trip_fills_header_and_verifies(tmp_path: Path) -> None:
    path = tmp_path / "a.ckpt"
    method = save_toy(path)
    ckpt = load_checkpoint(path)
    h = ckpt.header
    assert h["format"] == "ecg-tune-checkpoint" and h["format_version"] == 1
    assert h["package_version"] == ecg_tune.__version__ and h["created"].endswith("+00:00")
    assert h["preprocessing"]["lead_names"] == ["I", "II", "V1"] and h["epoch"] == 2
    for key, value in method.state_dict().items():
        assert torch.equal(ckpt.states["method"][key], value)
    assert ckpt.states["extra"][1][0].tolist() == [1.0, 1.0]
    assert not ckpt.is_encoder_only
    assert [p.name for p in tmp_path.iterdir()] == ["a.ckpt"]  # no temporary file left


def test_loads_with_weights_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_toy(tmp_path / "a.ckpt")
    seen = []
    real = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_checkpoint(tmp_path / "a.ckpt")
    assert seen == [True]


def test_failed_write_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.ckpt"
    first = save_toy(path, seed=0)
    before = path.read_bytes()

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match="last.ckpt.*No space left"):
        save_toy(path, seed=1)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    loaded = load_checkpoint(path).states["method"]
    assert all(torch.equal(loaded[k], v) for k, v in first.state_dict().items())


def test_interrupted_write_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.ckpt"
    save_toy(path)
    before = path.read_bytes()

    def interrupted(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_toy(path, seed=1)
    assert path.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


def test_truncated_and_garbage_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.ckpt"
    save_toy(path)
    data = path.read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.ckpt").write_bytes(np.random.default_rng(0).bytes(4096))
    for name in ("cut.ckpt", "junk.ckpt"):
        with pytest.raises(CheckpointError, match=f"{name}: unreadable checkpoint"):
            load_checkpoint(tmp_path / name)
    with pytest.raises(CheckpointError, match="missing.ckpt: no such checkpoint"):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_modified_content_fails_the_checksum(tmp_path: Path) -> None:
    path = tmp_path / "a.ckpt"
    save_toy(path)
    payload = torch.load(path, weights_only=True)
    payload["states"]["method"]["head.bias"][0] += 1e-3  # a valid file with one changed weight
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="a.ckpt: checksum mismatch"):
        load_checkpoint(path)
    payload = torch.load(path, weights_only=True)
    payload["states"]["method"]["head.bias"][0] -= 1e-3
    payload["header"]["preprocessing"]["fs"] = 500.0  # an edited header
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(path)


def test_foreign_torch_file_is_refused(tmp_path: Path) -> None:
    torch.save(toy_method().state_dict(), tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="plain.pt: not an ecg-tune checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")


def test_package_version_major_minor_must_match(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    major, minor, *_ = ecg_tune.__version__.split(".")
    monkeypatch.setattr(ecg_tune, "__version__", f"{major}.{int(minor) + 1}.0")
    save_toy(tmp_path / "newer.ckpt")
    monkeypatch.setattr(ecg_tune, "__version__", f"{major}.{minor}.99")
    save_toy(tmp_path / "patch.ckpt")
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match=rf"newer.ckpt: written by ecg-tune {major}\.{int(minor) + 1}\.0, this is"):
        load_checkpoint(tmp_path / "newer.ckpt")
    assert load_checkpoint(tmp_path / "patch.ckpt").header["package_version"] == f"{major}.{minor}.99"


def test_expect_explains_every_difference(tmp_path: Path) -> None:
    path = tmp_path / "a.ckpt"
    save_toy(path)
    load_checkpoint(path, expect={"encoder": "toy", "lead_names": LEADS, "fs": 100, "n_leads": 3})
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, expect={"encoder": "xresnet1d50", "lead_names": ["I", "II"], "fs": 500, "window": 32})
    message = str(info.value)
    assert message.startswith(f"{path}: checkpoint does not match")
    assert "encoder is 'toy' in the checkpoint, expected 'xresnet1d50'" in message
    assert "lead_names is ['I', 'II', 'V1'] in the checkpoint, expected ['I', 'II']" in message
    assert "fs is 100.0 in the checkpoint, expected 500" in message
    assert "window" not in message
    with pytest.raises(ValueError, match="unknown expect keys"):
        load_checkpoint(path, expect={"colour": "blue"})


def test_header_must_be_plain_python(tmp_path: Path) -> None:
    header = toy_header()
    header["preprocessing"]["normalization"] = {"mean": np.zeros(3, np.float32), "std": (1.0, 1.0, 1.0)}
    save_checkpoint(tmp_path / "a.ckpt", header, {})
    norm = load_checkpoint(tmp_path / "a.ckpt").header["preprocessing"]["normalization"]
    assert norm == {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    header["metrics"] = {"loss": torch.tensor(1.0)}
    with pytest.raises(CheckpointError, match="header.metrics.loss: header values must be plain"):
        save_checkpoint(tmp_path / "b.ckpt", header, {})


def test_build_encoder_method_and_export(tmp_path: Path, toy_registries: None) -> None:  # noqa: F811
    path = tmp_path / "full.ckpt"
    method = save_toy(path, seed=4)
    method.ema.fill_(0.25)
    save_checkpoint(path, toy_header(), {"method": method.state_dict()})
    ckpt = load_checkpoint(path)

    encoder = ckpt.build_encoder()
    assert isinstance(encoder, ToyEncoder) and not encoder.training
    for key, value in method.encoder.state_dict().items():
        assert torch.equal(encoder.state_dict()[key], value)
    rebuilt = ckpt.build_method()
    assert isinstance(rebuilt, ToyMethod) and not rebuilt.training
    assert torch.equal(rebuilt.ema, torch.full((4,), 0.25))

    export_encoder(method, toy_header(), tmp_path / "encoder.ckpt")
    only = load_checkpoint(tmp_path / "encoder.ckpt", expect={"encoder": "toy"})
    assert only.is_encoder_only and set(only.states) == {"encoder"}
    x = torch.randn(2, 3, 32)
    method.encoder.eval()
    assert torch.equal(only.build_encoder()(x), method.encoder(x))
    with pytest.raises(CheckpointError, match="holds only an encoder"):
        only.build_method()


def test_weights_that_do_not_fit_the_header(tmp_path: Path, toy_registries: None) -> None:  # noqa: F811
    header = toy_header()
    header["encoder"]["params"] = {"width": 16}
    save_checkpoint(tmp_path / "a.ckpt", header, {"method": toy_method().state_dict()})
    with pytest.raises(CheckpointError, match="a.ckpt: encoder weights do not fit"):
        load_checkpoint(tmp_path / "a.ckpt").build_encoder()


def test_checkpoint_dataclass_exposes_path(tmp_path: Path) -> None:
    save_toy(tmp_path / "a.ckpt")
    ckpt = load_checkpoint(tmp_path / "a.ckpt")
    assert isinstance(ckpt, Checkpoint) and ckpt.path == tmp_path / "a.ckpt"
    assert ckpt_mod.content_digest(ckpt.header, ckpt.states) == torch.load(tmp_path / "a.ckpt", weights_only=True)["sha256"]
