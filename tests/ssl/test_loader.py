"""WindowBatches: coverage, determinism, window bounds, leads, normalisation, targets, resident mode.

Signals are built so that every sample says where it came from: lead l of record r at time t holds
(r * 100 + t) * (l + 1) store units, with units_per_mv = 1, so a window identifies its record, start
and lead order exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecg_tune.data.store import SignalStore
from ecg_tune.errors import ConfigError
from ecg_tune.ssl.loader import WindowBatches

LEADS = ("I", "II", "V1")


def labelled_store(lengths: list[int]) -> SignalStore:
    signals = []
    for r, n in enumerate(lengths):
        t = np.arange(n, dtype=np.float64)
        signals.append(np.stack([(r * 100 + t) * (lead + 1) for lead in range(len(LEADS))]))
    return SignalStore.from_signals(signals, LEADS, fs=100.0, units_per_mv=1.0)


def decode(x: torch.Tensor, lead: int = 0, factor: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(record, start) of every window from the values of output lead `lead` (= store lead factor-1)."""
    first = x[:, lead, 0].numpy() / factor
    return (first // 100).astype(int), (first % 100).astype(int)


LENGTHS = [50 + (r % 7) for r in range(20)]


def test_every_record_once_per_epoch_with_contiguous_windows() -> None:
    store = labelled_store(LENGTHS)
    batches = WindowBatches(store, np.arange(20), window=16, batch_size=6, seed=1, drop_last=False)
    assert len(batches) == 4
    got = list(batches.epoch(0))
    assert [b.x.shape for b in got] == [(6, 3, 16)] * 3 + [(2, 3, 16)]
    x = torch.cat([b.x for b in got])
    assert x.dtype == torch.float32 and x.device.type == "cpu"
    records, starts = decode(x)
    assert sorted(records) == list(range(20))
    lengths = np.array(LENGTHS)[records]
    assert (starts >= 0).all() and (starts + 16 <= lengths).all()
    expected = (records * 100 + starts)[:, None] + np.arange(16)
    for lead in range(3):
        assert np.array_equal(x[:, lead].numpy(), expected * (lead + 1))
    assert all(b.y is None for b in got)


def test_epochs_are_deterministic_and_differ() -> None:
    store = labelled_store(LENGTHS)

    def run(seed: int, epoch: int) -> torch.Tensor:
        b = WindowBatches(store, np.arange(20), window=16, batch_size=5, seed=seed)
        return torch.cat([batch.x for batch in b.epoch(epoch)])

    assert torch.equal(run(1, 3), run(1, 3))
    assert not torch.equal(run(1, 3), run(1, 4))
    assert not torch.equal(run(1, 3), run(2, 3))


def test_drop_last_and_batch_size_check() -> None:
    store = labelled_store(LENGTHS)
    batches = WindowBatches(store, np.arange(20), window=16, batch_size=6, seed=0)
    assert len(batches) == 3 and len(list(batches.epoch(0))) == 3
    with pytest.raises(ConfigError, match="train.batch_size"):
        WindowBatches(store, np.arange(4), window=16, batch_size=6, seed=0)


def test_short_records_are_left_out() -> None:
    store = labelled_store([10, 40, 12, 40, 40])
    batches = WindowBatches(store, [0, 1, 2, 3, 4], window=20, batch_size=1, seed=0)
    assert batches.n_too_short == 2 and list(batches.indices) == [1, 3, 4]
    records, _ = decode(torch.cat([b.x for b in batches.epoch(0)]))
    assert sorted(records) == [1, 3, 4]
    with pytest.raises(ConfigError, match="data.window"):
        WindowBatches(store, [0, 2], window=20, batch_size=1, seed=0)


def test_subset_of_indices_only() -> None:
    store = labelled_store(LENGTHS)
    batches = WindowBatches(store, [3, 7, 11], window=16, batch_size=3, seed=0)
    records, _ = decode(next(batches.epoch(0)).x)
    assert sorted(records) == [3, 7, 11]


def test_lead_selection_normalisation_and_targets() -> None:
    store = labelled_store(LENGTHS)
    idx = np.arange(5, 15)
    targets = np.zeros((10, 20), np.float32)
    targets[np.arange(10), idx] = 1  # target = one-hot of the record's own store index
    mean, std = [10.0, 0.0], [2.0, 4.0]
    batches = WindowBatches(
        store, idx, window=16, batch_size=4, seed=0, lead_indices=[2, 0], normalization=(mean, std), targets=targets
    )
    raw = WindowBatches(store, idx, window=16, batch_size=4, seed=0)
    for b, r in zip(batches.epoch(2), raw.epoch(2)):
        assert b.x.shape == (4, 2, 16)
        assert torch.allclose(b.x[:, 0], (r.x[:, 2] - 10.0) / 2.0)
        assert torch.allclose(b.x[:, 1], r.x[:, 0] / 4.0)
        records, _ = decode(r.x)
        assert torch.equal(b.y, torch.from_numpy(np.eye(20, dtype=np.float32)[records]))
    with pytest.raises(ValueError, match="normalization needs 2"):
        WindowBatches(store, idx, window=16, batch_size=4, seed=0, lead_indices=[2, 0], normalization=([0.0], [1.0]))
    with pytest.raises(ValueError, match="targets has 3 rows"):
        WindowBatches(store, idx, window=16, batch_size=4, seed=0, targets=targets[:3])


def test_steps_per_epoch_draws_from_fresh_permutations() -> None:
    store = labelled_store(LENGTHS)
    batches = WindowBatches(store, np.arange(20), window=16, batch_size=8, seed=0, steps_per_epoch=5)
    assert len(batches) == 5
    records, _ = decode(torch.cat([b.x for b in batches.epoch(0)]))
    assert len(records) == 40 and sorted(records[:20]) == list(range(20)) and sorted(records[20:]) == list(range(20))


@pytest.mark.filterwarnings("error")
def test_resident_mode_gives_the_same_batches() -> None:
    store = labelled_store(LENGTHS)
    store.data.setflags(write=False)  # as when shared zero-copy between processes
    idx = np.arange(2, 20)
    targets = np.random.default_rng(0).random((18, 4)).astype(np.float32)
    kw = dict(window=16, batch_size=5, seed=7, lead_indices=[1, 2], normalization=([0.5, 1.0], [2.0, 3.0]), targets=targets)
    host = WindowBatches(store, idx, resident=False, **kw)
    resident = WindowBatches(store, idx, resident=True, **kw)
    for epoch in (0, 1):
        for a, b in zip(host.epoch(epoch), resident.epoch(epoch), strict=True):
            assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("resident", [False, True])
def test_cuda_batches_match_cpu(resident: bool) -> None:
    store = labelled_store(LENGTHS)
    kw = dict(window=16, batch_size=5, seed=7, normalization=([0.5, 1.0, 0.0], [2.0, 3.0, 1.0]))
    cpu = WindowBatches(store, np.arange(20), **kw)
    gpu = WindowBatches(store, np.arange(20), device="cuda", resident=resident, **kw)
    for a, b in zip(cpu.epoch(3), gpu.epoch(3), strict=True):
        assert b.x.device.type == "cuda"
        assert torch.allclose(a.x, b.x.cpu(), rtol=0, atol=1e-6)


def test_pinned_host_path_gives_the_same_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """On CUDA (not resident) windows are gathered straight into a fresh pinned buffer (`out=`) and
    copied non_blocking; that branch never runs on a CPU-only machine, so run it here with the pinning
    switched off (pinned memory needs a CUDA device)."""
    store = labelled_store(LENGTHS)
    kw = dict(window=16, batch_size=5, seed=7, lead_indices=[2, 0], normalization=([0.5, 1.0], [2.0, 3.0]))
    plain = WindowBatches(store, np.arange(20), **kw)
    pinned = WindowBatches(store, np.arange(20), **kw)
    assert not pinned._pin  # only a CUDA device pins
    pinned._pin = True
    buffers = []
    real_empty = torch.empty

    def empty(*args, pin_memory: bool = False, **kwargs) -> torch.Tensor:
        buffers.append(pin_memory)
        return real_empty(*args, **kwargs)

    monkeypatch.setattr(torch, "empty", empty)
    for epoch in (0, 1):
        for a, b in zip(plain.epoch(epoch), pinned.epoch(epoch), strict=True):
            assert torch.equal(a.x, b.x)
    assert buffers == [True] * 2 * len(plain)  # one fresh (pinned) buffer per batch


def test_flat_lead_is_only_centred() -> None:
    store = labelled_store(LENGTHS)
    batches = WindowBatches(store, np.arange(20), window=16, batch_size=4, seed=0, normalization=([1.0] * 3, [2.0, 0.0, 1.0]))
    raw = WindowBatches(store, np.arange(20), window=16, batch_size=4, seed=0)
    b, r = next(batches.epoch(0)), next(raw.epoch(0))
    assert torch.allclose(b.x[:, 1], r.x[:, 1] - 1.0)
    with pytest.raises(ValueError, match=">= 0"):
        WindowBatches(store, np.arange(20), window=16, batch_size=4, seed=0, normalization=([0.0] * 3, [1.0, -1.0, 1.0]))


def test_batches_carry_the_patient_id_of_each_windows_record() -> None:
    """Record r holds the constant r, so each window says which record it came from; its group must be
    that record's patient, on every rank's slice too."""
    n = 24
    store = SignalStore.from_signals([np.full((2, 300), float(r), dtype=np.float32) for r in range(n)], ["I", "II"], 100.0)
    patient = np.arange(n) // 3  # three records per patient
    indices = np.arange(0, n, 2)  # every other record: groups are aligned with these
    for shard in ((0, 1), (0, 2), (1, 2)):
        batches = WindowBatches(store, indices, window=50, batch_size=4, seed=1, shard=shard,
                                groups=patient[indices], steps_per_epoch=5)
        for batch in batches.epoch(0):
            records = batch.x[:, 0, 0].round().long()
            assert batch.groups is not None and torch.equal(batch.groups, torch.from_numpy(patient)[records])
