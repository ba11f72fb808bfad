"""StreamBatches (data.mode stream) in the trainer: same windows as the data-layer stream, resumable
position, workers interleaved, data.mode auto/stream in prepare_data, checkpoint carries the position."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ecg_tune.data.stream import Part, StreamSource
from ecg_tune.data.stream_corpus import StreamCorpus
from ecg_tune.ssl.pretrain import prepare_data, run_pretraining
from ecg_tune.ssl.stream_loader import StreamBatches
from ecg_tune.ssl.train import Trainer
from tests.ssl.conftest import toy_config


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ecg_tune.data.synthetic import write_synthetic

    out = tmp_path_factory.mktemp("stream-ssl") / "synth"
    write_synthetic(out, n_records=120, seed=1, records_per_shard=30)
    return out


def test_batches_are_the_streams_windows_in_mv_and_resume_mid_epoch(corpus: Path) -> None:
    source = StreamSource([StreamCorpus.open(corpus)], buffer=40, part=Part(num_workers=2))
    batches = StreamBatches(source, window=100, batch_size=10, seed=3)
    assert len(batches) == 2 * (60 // 10)
    full = [b.x for b in batches.epoch(1)]
    assert batches.state() == {"epoch": 2, "batch": 0}
    raw = [list(source.part_stream(Part(0, 1, w, 2), window=100, batch_size=10, seed=3).batches(1)) for w in range(2)]
    for b, x in enumerate(full):  # batch b from worker b % 2, float32 mV (leads, time) as gather_windows
        r = raw[b % 2][b // 2]
        assert x.dtype == torch.float32 and x.shape == (10, 12, 100)
        assert torch.equal(x, torch.from_numpy(np.divide(r.transpose(0, 2, 1), np.float32(source.units_per_mv))))
    batches.load_state({"epoch": 1, "batch": 5})
    rest = [b.x for b in batches.epoch(1)]
    assert len(rest) == 7 and all(torch.equal(a, b) for a, b in zip(full[5:], rest, strict=True))


def test_prepare_data_auto_streams_above_the_budget_and_says_so(corpus: Path, toy_registries: None) -> None:  # noqa: F811
    cfg = toy_config(**{"data.pretrain": str(corpus), "data.mode": "auto", "data.memory_budget_gb": 0.001})
    data = prepare_data(cfg)
    assert data.mode == "stream" and isinstance(data.store, StreamSource)
    assert "streaming" in data.mode_reason and "above the budget" in data.mode_reason
    assert len(data.indices) == 120
    data = prepare_data(cfg.replace(**{"data.memory_budget_gb": 8.0}))
    assert data.mode == "memory" and "within the budget" in data.mode_reason
    capped = prepare_data(cfg.replace(**{"data.max_pretrain_records": 50}))
    assert capped.mode == "stream" and capped.store.n_records() == 50


def test_streaming_trainer_resumes_exactly_from_its_checkpoint(
    corpus: Path, tmp_path: Path, toy_registries: None, one_thread: None  # noqa: F811
) -> None:
    cfg = toy_config(**{"data.pretrain": str(corpus), "data.mode": "stream", "data.shuffle_buffer": 16,
                        "train.epochs": 2})
    data = prepare_data(cfg)
    straight = Trainer.from_config(cfg, data.store, data.indices, lead_names=data.lead_names)
    assert isinstance(straight.batches, StreamBatches)
    straight.fit()
    first = Trainer.from_config(cfg, data.store, data.indices, lead_names=data.lead_names)
    first.fit(1)
    first.save(tmp_path / "one.ckpt")
    assert first.state()["stream"] == {"epoch": 1, "batch": 0}
    resumed = Trainer.restore(tmp_path / "one.ckpt", prepare_data(cfg).store, data.indices)
    resumed.fit()
    assert [m["loss"] for m in resumed.history] == [m["loss"] for m in straight.history]


def test_run_pretraining_in_stream_mode_records_the_choice(
    corpus: Path, tmp_path: Path, toy_registries: None, one_thread: None  # noqa: F811
) -> None:
    cfg = toy_config(**{"data.pretrain": str(corpus), "data.mode": "stream", "train.epochs": 1})
    result = run_pretraining(cfg, tmp_path / "run")
    assert result.data_mode == "stream" and result.n_records == 120
    from ecg_tune.ssl.checkpoint import load_checkpoint

    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt.header["pretraining_data"]["mode"] == "stream"
    assert ckpt.states["stream"] == {"epoch": 1, "batch": 0}
