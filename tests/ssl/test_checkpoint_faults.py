"""Checkpoint faults on a real trainer checkpoint (xresnet1d50, width 8, SimCLR, Adam state, RNG state).

- loading never unpickles code (weights_only=True), even for a file built to run code when unpickled;
- a checkpoint from another encoder, lead set, sampling rate or package version is refused, with an
  explanation naming the file and the difference, by `load_checkpoint`, by the trainer and by evaluation;
- a truncated file or a flipped bit anywhere is detected (or, where the flip hits bytes the content
  does not depend on, the content is provably unchanged): never silently different weights;
- the disk filling up while a checkpoint is written (ENOSPC in the middle of the write, or at fsync)
  leaves the previous checkpoint byte-identical and usable, leaves no temp file, and training resumed
  from it continues exactly as if nothing had happened.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import ecg_tune
from ecg_tune.config import TrialConfig
from ecg_tune.data.store import SignalStore
from ecg_tune.errors import CheckpointError, EcgTuneError
from ecg_tune.ssl import checkpoint as ckpt_mod
from ecg_tune.ssl.checkpoint import content_digest, load_checkpoint
from ecg_tune.ssl.train import Trainer

LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
CONFIG = {"method.name": "simclr", "encoder.name": "xresnet1d50", "encoder.width": 8, "train.batch_size": 4,
          "train.epochs": 3, "data.window": 250, "seed": 3}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small models: one thread is fastest and deterministic on a busy box
    yield
    torch.set_num_threads(threads)


def make_store(leads: tuple[str, ...] = LEADS, fs: float = 100.0) -> SignalStore:
    rng = np.random.default_rng(1)
    return SignalStore.from_signals([rng.normal(0, 0.3, (len(leads), 320)) for _ in range(8)], leads, fs)


def make_trainer(store: SignalStore | None = None, **over: Any) -> Trainer:
    store = store or make_store()
    cfg = TrialConfig.from_flat({k: v for k, v in {**CONFIG, **over}.items() if v is not None})
    return Trainer.from_config(cfg, store, np.arange(len(store)), lead_names=store.lead_names, device="cpu")


def restore(path: Path, store: SignalStore | None = None) -> Trainer:
    store = store or make_store()
    return Trainer.restore(path, store, np.arange(len(store)), device="cpu")


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A checkpoint after epoch 1, and the state of an uninterrupted run after epoch 2."""
    folder = tmp_path_factory.mktemp("ckpt")
    trainer = make_trainer()
    trainer.fit(1)
    trainer.save(folder / "epoch1.ckpt")
    trainer.fit(2)
    return {"path": folder / "epoch1.ckpt", "bytes": (folder / "epoch1.ckpt").read_bytes(),
            "epoch2": {k: v.clone() for k, v in trainer.method.state_dict().items()},
            "loss2": trainer.history[-1]["loss"]}


def copy_of(saved: dict[str, Any], folder: Path, name: str = "last.ckpt") -> Path:
    path = folder / name
    path.write_bytes(saved["bytes"])
    return path


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------------ no code


class RunsCode:
    """Unpickling this creates `marker`: what a malicious checkpoint would do with plain torch.load."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(saved: dict, tmp_path: Path) -> None:
    payload = torch.load(saved["path"], weights_only=True)
    marker = tmp_path / "code-ran"
    payload["states"]["trainer"]["history"].append({"loss": RunsCode(marker)})
    torch.save(payload, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="evil.ckpt: unreadable checkpoint"):
        load_checkpoint(tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError):
        restore(tmp_path / "evil.ckpt")
    assert not marker.exists(), "loading the checkpoint ran code"
    torch.load(tmp_path / "evil.ckpt", weights_only=False)  # what weights_only=True prevents
    assert marker.exists()


def test_every_load_uses_weights_only(saved: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = torch.load

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    path = copy_of(saved, tmp_path)
    trainer = restore(path)
    trainer.fit(2)
    trainer.save(path)
    load_checkpoint(path).build_encoder()
    assert calls and all(c is True for c in calls)


# ------------------------------------------------------------------------------------------------ mismatch


def test_another_encoder_is_refused_with_an_explanation(saved: dict, tmp_path: Path) -> None:
    path = copy_of(saved, tmp_path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, expect={"encoder": "inception1d", "n_leads": 12})
    assert str(info.value) == f"{path}: checkpoint does not match: encoder is 'xresnet1d50' in the checkpoint, expected 'inception1d'"
    other = make_trainer(**{"encoder.name": "inception1d", "encoder.width": None})  # a trainer built for another encoder
    with pytest.raises(CheckpointError, match=rf"{path}: does not fit this trainer's method/optimizer"):
        other.load_state(path)
    wider = make_trainer(**{"encoder.width": 16})  # same encoder name, other architecture parameters
    with pytest.raises(CheckpointError, match="does not fit this trainer"):
        wider.load_state(path)


def test_another_lead_set_or_rate_is_refused_with_an_explanation(saved: dict, tmp_path: Path) -> None:
    path = copy_of(saved, tmp_path)
    with pytest.raises(CheckpointError, match=r"lead_names is \['I', 'II', .*\] in the checkpoint, expected \['I', 'II'\]"):
        load_checkpoint(path, expect={"lead_names": ["I", "II"]})
    with pytest.raises(EcgTuneError, match=r"leads \['III', 'aVR'.*\] are not in the store's \['I', 'II'\]"):
        restore(path, make_store(("I", "II")))
    with pytest.raises(CheckpointError, match=rf"{path}: trained at 100.0 Hz, the data is at 500.0 Hz"):
        restore(path, make_store(fs=500.0))


def test_evaluation_refuses_a_dataset_with_other_leads_or_rate(saved: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from ecg_tune.cli import main
    from ecg_tune.data import write_dataset
    from ecg_tune.data.synthetic import generate_records

    path = copy_of(saved, tmp_path)
    write_dataset(generate_records(40, seed=0), tmp_path / "two-leads", source="synthetic", source_version="t",
                  fs=100, lead_order=["I", "II"])
    write_dataset(generate_records(40, seed=0), tmp_path / "fifty-hz", source="synthetic", source_version="t", fs=50)
    for data, reason in (("two-leads", "the checkpoint was trained on leads I, II, III"),
                         ("fifty-hz", "the checkpoint expects signals at 100 Hz, the dataset is at 50 Hz")):
        code = main(["evaluate", str(path), "--data", str(tmp_path / data), "--out", str(tmp_path / "eval")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("ecg-tune evaluate: error: ") and reason in err[0], err
    assert not (tmp_path / "eval").exists()


def test_another_package_version_is_refused_with_an_explanation(saved: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    major, minor, *_ = ecg_tune.__version__.split(".")
    path = copy_of(saved, tmp_path)
    monkeypatch.setattr(ecg_tune, "__version__", f"{major}.{int(minor) + 1}.0")  # the package was upgraded
    with pytest.raises(CheckpointError) as info:
        restore(path)
    message = str(info.value)
    assert message.startswith(f"{path}: written by ecg-tune {major}.{minor}.")
    assert f"this is {major}.{int(minor) + 1}.0" in message and "model definitions may change" in message
    monkeypatch.setattr(ecg_tune, "__version__", f"{major}.{minor}.999")  # a patch release still reads it
    assert restore(path).epoch == 1


# ------------------------------------------------------------------------------------------------ corruption


def test_truncated_anywhere_is_detected(saved: dict, tmp_path: Path) -> None:
    data = saved["bytes"]
    cuts = sorted({0, 1, 100, len(data) - 1, len(data) - 22, *range(len(data) // 16, len(data), len(data) // 16)})
    for cut in cuts:
        path = tmp_path / f"cut-{cut}.ckpt"
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=rf"cut-{cut}.ckpt: (unreadable checkpoint|not an ecg-tune)"):
            load_checkpoint(path)
        path.unlink()


def _flip_positions(size: int, n: int, seed: int) -> list[int]:
    """One random byte in each of n equal slices of the file (covers headers, tensors, zip directory)."""
    rng = np.random.default_rng(seed)
    edges = np.linspace(0, size, n + 1).astype(int)
    return [int(rng.integers(a, b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def check_bit_flips(saved: dict, tmp_path: Path, n: int, seed: int) -> tuple[int, int]:
    data = saved["bytes"]
    original = torch.load(saved["path"], weights_only=True)
    reference = content_digest(original["header"], original["states"])
    detected = unchanged = 0
    rng = np.random.default_rng(seed + 1)
    path = tmp_path / "flipped.ckpt"
    for pos in _flip_positions(len(data), n, seed):
        damaged = bytearray(data)
        damaged[pos] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(damaged))
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as e:
            assert str(e).startswith(f"{path}: "), e
            detected += 1
            continue
        # Not detected: only allowed where the flip did not change the content (e.g. zip padding).
        assert content_digest(ckpt.header, ckpt.states) == reference, f"a flip at byte {pos} changed the content silently"
        unchanged += 1
    return detected, unchanged


def test_bit_flips_are_detected(saved: dict, tmp_path: Path) -> None:
    detected, unchanged = check_bit_flips(saved, tmp_path, n=24, seed=0)
    assert detected + unchanged == 24 and detected >= 18, (detected, unchanged)


@pytest.mark.slow
def test_many_bit_flips_are_detected(saved: dict, tmp_path: Path) -> None:
    # ~12% of the bytes are zip padding and metadata the content does not depend on: such flips load
    # the same content (checked inside); every other flip is refused.
    detected, unchanged = check_bit_flips(saved, tmp_path, n=200, seed=1)
    assert detected + unchanged == 200 and detected >= 0.8 * 200, (detected, unchanged)


# ------------------------------------------------------------------------------------------------ disk full


class FullDisk:
    """A file whose device fills up: the first `room` bytes are written, then write() raises ENOSPC."""

    def __init__(self, f: Any, room: int):
        self._f, self.room, self.failed = f, room, False

    def write(self, data: Any) -> int:
        data = bytes(data)
        if len(data) > self.room:
            self._f.write(data[: self.room])
            self.room, self.failed = 0, True
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self._f.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()


def full_disk_open(room: int, opened: list) -> Any:
    def fake_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = open(file, mode, *args, **kwargs)
        if "w" in mode or "x" in mode:
            f = FullDisk(f, room)
            opened.append(f)
        return f

    return fake_open


@pytest.mark.parametrize("room", [0, 700, 300_000, 1_100_000])
def test_disk_full_mid_write_keeps_the_previous_checkpoint(saved: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, room: int) -> None:
    path = copy_of(saved, tmp_path)
    trainer = restore(path)
    trainer.fit(2)
    opened: list[FullDisk] = []
    monkeypatch.setattr(ckpt_mod, "open", full_disk_open(room, opened), raising=False)
    with pytest.raises(CheckpointError, match=rf"{path}: cannot write checkpoint"):
        trainer.save(path)
    monkeypatch.undo()
    assert opened and all(f.failed for f in opened), "the write did not go through the full disk"
    assert path.read_bytes() == saved["bytes"], "the previous checkpoint changed"
    assert os.listdir(tmp_path) == ["last.ckpt"], "a temp file was left behind"
    # The previous checkpoint is usable: training resumed from it ends exactly where an uninterrupted run does.
    resumed = restore(path)
    assert resumed.epoch == 1
    resumed.fit(2)
    assert same_state(resumed.method.state_dict(), saved["epoch2"]) and resumed.history[-1]["loss"] == saved["loss2"]
    resumed.save(path)  # and once there is room again, saving works
    assert load_checkpoint(path).header["epoch"] == 2


def test_disk_full_error_says_the_disk_is_full(saved: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = copy_of(saved, tmp_path)
    trainer = restore(path)
    monkeypatch.setattr(ckpt_mod, "open", full_disk_open(300_000, []), raising=False)
    with pytest.raises(CheckpointError, match="No space left on device"):
        trainer.save(path)


def test_disk_full_at_fsync_keeps_the_previous_checkpoint(saved: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Delayed allocation: the bytes were accepted, the device reports ENOSPC when they are flushed."""
    path = copy_of(saved, tmp_path)
    trainer = restore(path)
    trainer.fit(2)

    def fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(CheckpointError, match=rf"{path}: cannot write checkpoint .*No space left on device"):
        trainer.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == saved["bytes"] and os.listdir(tmp_path) == ["last.ckpt"]
    assert load_checkpoint(path).header["epoch"] == 1


def test_a_crash_between_write_and_rename_keeps_the_previous_checkpoint(saved: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = copy_of(saved, tmp_path)
    trainer = restore(path)
    trainer.fit(2)

    def replace(src: Any, dst: Any) -> None:
        raise KeyboardInterrupt  # what a kill between the write and the rename looks like from inside

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        trainer.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == saved["bytes"] and os.listdir(tmp_path) == ["last.ckpt"]
