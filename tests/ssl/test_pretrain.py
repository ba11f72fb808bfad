"""run_pretraining on stand-in datasets: combining, leakage guard, leads, resume, files written."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from ecg_tune.config import TrialConfig
from ecg_tune.data.store import SignalStore
from ecg_tune.errors import CheckpointError, ConfigError
from ecg_tune.ssl import pretrain as pretrain_mod
from ecg_tune.ssl.checkpoint import load_checkpoint
from ecg_tune.ssl.pretrain import metrics_log, run_pretraining
from tests.ssl.conftest import LEADS, toy_config


@dataclass
class FakeDataset:
    store: SignalStore
    leaked: list[int] = field(default_factory=list)  # rows that find_leakage reports
    normalization: tuple[np.ndarray, np.ndarray] = (np.array([0.1, 0.2, 0.3]), np.array([1.0, 2.0, 3.0]))

    @property
    def lead_names(self) -> tuple[str, ...]:
        return self.store.lead_names

    @property
    def fs(self) -> float:
        return self.store.fs

    def targets(self, label_set: str, indices: np.ndarray) -> np.ndarray:
        return np.eye(2, dtype=np.float32)[np.asarray(indices) % 2]

    def label_vocabulary(self, label_set: str) -> list[str]:
        return ["NORM", "MI"]


@dataclass
class FakeLeakage:
    indices: np.ndarray
    counts: dict[str, int]


def fake_store(n: int, seed: int, leads: tuple[str, ...] = LEADS, fs: float = 100.0) -> SignalStore:
    rng = np.random.default_rng(seed)
    return SignalStore.from_signals([rng.normal(0, 0.5, (len(leads), 48)) for _ in range(n)], leads, fs)


@pytest.fixture
def datasets(monkeypatch: pytest.MonkeyPatch, toy_registries: None) -> dict[str, FakeDataset]:  # noqa: F811
    registry = {
        "a": FakeDataset(fake_store(12, 0), leaked=[1, 5]),
        "b": FakeDataset(fake_store(10, 1), leaked=[0]),
        "ptbxl": FakeDataset(fake_store(4, 2)),
        "other_fs": FakeDataset(fake_store(4, 3, fs=500.0)),
        "other_leads": FakeDataset(fake_store(4, 3, leads=("I", "V1", "II"))),
    }

    def leakage(pretrain_ds: FakeDataset, downstream_ds: FakeDataset, folds=(9, 10)) -> FakeLeakage:
        assert downstream_ds is registry["ptbxl"] and tuple(folds) == (9, 10)
        return FakeLeakage(np.array(pretrain_ds.leaked, dtype=np.int64), {"record_id": len(pretrain_ds.leaked)})

    monkeypatch.setattr(pretrain_mod, "open_dataset", lambda path: registry[path])
    monkeypatch.setattr(pretrain_mod, "find_leakage", leakage)
    # data.mode auto sizes the corpora from their shards; these stand-ins have none (in memory).
    monkeypatch.setattr(pretrain_mod, "open_corpora", lambda data: [])
    return registry


def cfg_for(**overrides):
    base = {"data.pretrain": "a,b", "data.downstream": "ptbxl", "train.epochs": 3, "train.batch_size": 6}
    return toy_config(**{**base, **overrides})


def test_run_writes_checkpoints_metrics_and_excludes_leakage(tmp_path: Path, datasets: dict) -> None:
    result = run_pretraining(cfg_for(), tmp_path, device="cpu")
    assert result.excluded_leakage == 3 and result.n_records == 19 and result.resumed_from_epoch == 0
    assert result.checkpoint == tmp_path / "last.ckpt" and result.encoder == tmp_path / "encoder.ckpt"
    assert [m["epoch"] for m in result.history] == [1.0, 2.0, 3.0]
    assert metrics_log(tmp_path) == json.loads(json.dumps(result.history))

    last = load_checkpoint(result.checkpoint)
    provenance = dict(last.header["pretraining_data"])
    assert provenance.pop("mode") == "memory" and "data.mode=auto: in memory" in provenance.pop("mode_reason")
    assert last.header["epoch"] == 3 and provenance == {
        "datasets": ["a", "b"], "n_records": 19, "excluded_leakage": 3, "leakage_reference": "ptbxl",
    }
    encoder = load_checkpoint(result.encoder, expect={"encoder": "toy", "lead_names": list(LEADS), "fs": 100})
    assert encoder.is_encoder_only and encoder.header["epoch"] == 3
    built = encoder.build_encoder()
    x = torch.randn(2, 3, 32)
    trained = last.build_method().encoder
    assert torch.equal(built(x), trained(x))


def test_leakage_guard_off_and_record_cap(tmp_path: Path, datasets: dict) -> None:
    assert run_pretraining(cfg_for(**{"data.exclude_leakage": False, "train.epochs": 1}), tmp_path / "x").n_records == 22
    capped = run_pretraining(cfg_for(**{"data.max_pretrain_records": 7, "train.epochs": 1}), tmp_path / "y")
    assert capped.n_records == 7 and capped.excluded_leakage == 3


def test_lead_subset_and_normalisation(tmp_path: Path, datasets: dict) -> None:
    cfg = cfg_for(**{"data.leads": "v1,I", "data.normalize": True, "train.epochs": 1})
    result = run_pretraining(cfg, tmp_path, device="cpu")
    pre = load_checkpoint(result.encoder).header["preprocessing"]
    assert pre["lead_names"] == ["V1", "I"]
    # The paper's fixed PTB-XL constants (paper notes §2.3: V1 and I), not the corpus's own statistics.
    assert pre["normalization"] == {"mean": [0.00017031, -0.00184586], "std": [0.23374124, 0.16401004]}


def test_interrupted_run_resumes_exactly(tmp_path: Path, datasets: dict) -> None:
    cfg = cfg_for(**{"train.checkpoint_every": 2})
    straight = run_pretraining(cfg, tmp_path / "straight")

    stopped = run_pretraining(cfg, tmp_path / "resumed", callback=lambda t, m: t.epoch == 1)
    assert len(stopped.history) == 1 and load_checkpoint(stopped.checkpoint).header["epoch"] == 1
    resumed = run_pretraining(cfg, tmp_path / "resumed")
    assert resumed.resumed_from_epoch == 1
    assert [m["epoch"] for m in metrics_log(tmp_path / "resumed")] == [1.0, 2.0, 3.0]
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    for key, value in a.states["method"].items():
        assert torch.equal(value, b.states["method"][key]), key


def test_checkpoint_every(tmp_path: Path, datasets: dict) -> None:
    epochs_on_disk = []

    def look(trainer, metrics) -> bool:
        path = tmp_path / "last.ckpt"
        epochs_on_disk.append(load_checkpoint(path).header["epoch"] if path.exists() else None)
        return False

    run_pretraining(cfg_for(**{"train.checkpoint_every": 2}), tmp_path, callback=look)
    assert epochs_on_disk == [None, 2, 3]


def test_resuming_with_another_config_is_refused(tmp_path: Path, datasets: dict) -> None:
    run_pretraining(cfg_for(**{"train.epochs": 1}), tmp_path)
    with pytest.raises(CheckpointError, match=r"another config \(optim.lr: 0.01 -> 0.5\)"):
        run_pretraining(cfg_for(**{"train.epochs": 1, "optim.lr": 0.5}), tmp_path)
    run_pretraining(cfg_for(**{"train.epochs": 1, "evaluation.probe_every": 3}), tmp_path)  # eval-only change


@pytest.mark.parametrize("other", ["other_fs", "other_leads"])
def test_datasets_must_agree_on_leads_and_fs(tmp_path: Path, datasets: dict, other: str) -> None:
    with pytest.raises(ConfigError, match=f"{other} has leads"):
        run_pretraining(cfg_for(**{"data.pretrain": f"a,{other}"}), tmp_path)
    with pytest.raises(ConfigError, match="data.pretrain"):
        run_pretraining(cfg_for(**{"data.pretrain": ""}), tmp_path)


def test_supervised_pretraining_uses_the_label_set(tmp_path: Path, datasets: dict) -> None:
    cfg = cfg_for(**{"method.name": "toy_supervised", "augment.pipeline": "", "data.pretrain": "a", "train.epochs": 1})
    header = load_checkpoint(run_pretraining(cfg, tmp_path).checkpoint).header
    assert header["label_vocabulary"] == ["NORM", "MI"] and header["method"]["params"] == {"n_classes": 2}
    with pytest.raises(ConfigError, match="exactly one dataset"):
        run_pretraining(cfg.replace(**{"data.pretrain": "a,b"}), tmp_path / "two")


def test_end_to_end_on_a_synthetic_dataset(tmp_path: Path, one_thread: None) -> None:  # noqa: F811
    """Real pieces: shards on disk -> open_dataset -> leakage guard -> simclr + xresnet1d50 -> files."""
    from ecg_tune.data import open_dataset
    from ecg_tune.data.synthetic import write_synthetic

    write_synthetic(tmp_path / "synth", n_records=40, seed=0)
    held_out = int(open_dataset(tmp_path / "synth").records["fold"].isin([9, 10]).sum())
    cfg = TrialConfig.from_flat(
        {
            "data.pretrain": str(tmp_path / "synth"),
            "data.downstream": str(tmp_path / "synth"),  # its own val/test folds must be left out
            "data.normalize": True,
            "train.batch_size": 8,
            "train.epochs": 1,
        }
    )
    result = run_pretraining(cfg, tmp_path / "run", device="cpu")
    assert held_out > 0 and result.excluded_leakage == held_out and result.n_records == 40 - held_out
    enc = load_checkpoint(result.encoder, expect={"encoder": "xresnet1d50", "fs": 100, "method": "simclr"})
    assert enc.header["preprocessing"]["normalization"] is not None
    assert enc.build_encoder()(torch.zeros(2, 12, 250)).shape == (2, 512)
    assert math.isfinite(metrics_log(tmp_path / "run")[0]["loss"])


def test_cmsc_with_patient_positives_gets_patient_ids_from_the_records(tmp_path: Path, one_thread: None) -> None:  # noqa: F811
    """Real shards: prepare_data builds one integer per patient (records without an id alone), and a
    CMSC pretraining with `method.positives: patient` runs on them; streaming (no patient ids) refuses."""
    from ecg_tune.data import open_dataset
    from ecg_tune.data.synthetic import write_synthetic
    from ecg_tune.ssl.pretrain import patient_groups, prepare_data

    write_synthetic(tmp_path / "synth", n_records=60, seed=0)
    ds = open_dataset(tmp_path / "synth")
    flat = {"data.pretrain": str(tmp_path / "synth"), "method.name": "cmsc", "method.positives": "patient",
            "encoder.width": 8, "train.batch_size": 8, "train.epochs": 1, "train.steps_per_epoch": 2}
    data = prepare_data(TrialConfig.from_flat(flat))
    pids = ds.records["patient_id"].to_numpy()[data.indices]
    assert data.groups is not None and len(data.groups) == len(data.indices)
    same_group = data.groups[:, None] == data.groups[None, :]
    assert np.array_equal(same_group, pids[:, None] == pids[None, :])  # by hand, from the ids themselves
    assert len(set(pids)) < len(pids), "the synthetic cohort should have patients with several records"
    ds.records.loc[ds.records.index[:3], "patient_id"] = None  # no id: a patient of its own
    alone = patient_groups([ds])[:3]
    assert len(set(alone)) == 3 and not set(alone) & set(patient_groups([ds])[3:])
    assert prepare_data(TrialConfig.from_flat({**flat, "method.positives": "record"})).groups is None

    result = run_pretraining(TrialConfig.from_flat(flat), tmp_path / "run", device="cpu")
    assert math.isfinite(metrics_log(tmp_path / "run")[0]["loss"]) and result.n_records == 60
    with pytest.raises(ConfigError, match="method.positives"):
        run_pretraining(TrialConfig.from_flat({**flat, "data.mode": "stream"}), tmp_path / "stream", device="cpu")
