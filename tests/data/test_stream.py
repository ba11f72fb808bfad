"""Streaming shards (data/stream.py): exactly once per epoch across ranks x workers, seeded order,
resume mid-epoch, S3 (a real S3-compatible server on 127.0.0.1) = local, a verified shard cache, a
decoded (int16) cache = the shards,
mixed corpora by weight, and peak memory that does not grow with the corpus."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ecg_tune.data import open_dataset
from ecg_tune.data.shard_cache import ShardCache
from ecg_tune.data.stream import Part, StreamSource, shuffle_order
from ecg_tune.data.stream_corpus import StreamCorpus
from ecg_tune.data.stream_mode import choose_mode
from ecg_tune.errors import DatasetError

WINDOW = 250


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ecg_tune.data.synthetic import write_synthetic

    out = tmp_path_factory.mktemp("stream") / "synth"
    write_synthetic(out, n_records=300, seed=0, records_per_shard=40)  # 8 shards, one row group each
    return out


def replicate(src: Path, dest: Path, times: int) -> Path:
    """A corpus `times` as large made of copies of `src`'s (synthetic) shards."""
    manifest = json.loads((src / "manifest.json").read_text())
    shards = []
    for k in range(times):
        for i, entry in enumerate(manifest["shards"]):
            name = f"shards/shard-{k:03d}-{i:03d}.parquet"
            (dest / "shards").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / entry["file"], dest / name)
            shards.append({**entry, "file": name})
    manifest["shards"], manifest["n_records"] = shards, manifest["n_records"] * times
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def all_batches(source: StreamSource, part: Part, epoch: int, batch: int = 16, start: int = 0) -> list[np.ndarray]:
    return list(source.part_stream(part, window=WINDOW, batch_size=batch, seed=7).batches(epoch, start))


def test_every_record_once_per_epoch_across_2_ranks_x_2_workers(corpus: Path) -> None:
    source = StreamSource([StreamCorpus.open(corpus)], buffer=50)
    seen = []
    for rank in range(2):
        for worker in range(2):
            stream = source.part_stream(Part(rank, 2, worker, 2), window=WINDOW, batch_size=15, seed=7)
            order = stream.order(0)
            assert len(order) == 75 and len(stream) == 5
            seen.append(order[:, 1])
    rows = np.concatenate(seen)
    assert sorted(rows.tolist()) == list(range(300))  # all 300 records, none twice

    # The batches hold exactly those records' windows: each is a crop of the record the order names.
    ds = open_dataset(corpus)
    stream = source.part_stream(Part(1, 2, 0, 2), window=WINDOW, batch_size=15, seed=7)
    order = stream.order(0)[:, 1]
    for b, x in enumerate(stream.batches(0)):
        for i in (0, 7, 14):
            record = ds.store.data[ds.store.offsets[order[b * 15 + i]] :][: ds.store.lengths[order[b * 15 + i]]]
            assert any(np.array_equal(record[s : s + WINDOW], x[i]) for s in range(len(record) - WINDOW + 1))


def test_order_is_seeded_differs_between_epochs_and_resume_continues_it(corpus: Path) -> None:
    source = StreamSource([StreamCorpus.open(corpus)], buffer=64)
    part = Part(0, 1, 0, 1)
    first = all_batches(source, part, epoch=2)
    again = all_batches(StreamSource([StreamCorpus.open(corpus)], buffer=64), part, epoch=2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    other = all_batches(source, part, epoch=3)
    assert len(other) == len(first) and not np.array_equal(np.stack(first), np.stack(other))
    stream = source.part_stream(part, window=WINDOW, batch_size=16, seed=7)
    assert not np.array_equal(stream.order(2), stream.order(3))
    resumed = all_batches(source, part, epoch=2, start=7)
    assert all(np.array_equal(a, b) for a, b in zip(first[7:], resumed, strict=True))


def test_shuffle_buffer_is_bounded_and_a_permutation() -> None:
    order = shuffle_order(1000, 32, np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(1000))
    assert (order < 32 + np.arange(1000)).all()  # never needs more than the buffer ahead
    assert np.abs(np.diff(order)).mean() > 5  # and it does shuffle


def test_mixed_corpora_follow_the_weights(corpus: Path, tmp_path: Path) -> None:
    small = replicate(corpus, tmp_path / "b", 1)
    a, b = StreamCorpus.open(corpus), StreamCorpus.open(small)
    source = StreamSource([a, b], weights=[0.7, 0.3], buffer=40)
    stream = source.part_stream(Part(), window=WINDOW, batch_size=20, seed=7)
    order = stream.order(0)
    assert len(order) == 600 and (order[:, 0] == 0).sum() == 420  # 0.7 of the 600 records of an epoch
    assert len(np.unique(order[order[:, 0] == 0, 1])) == 300  # the heavier corpus cycles: all its records
    assert len(list(stream.batches(0))) == len(stream) == 30


def test_auto_mode_says_what_it_picked() -> None:
    assert choose_mode("auto", 1.0, 2 * 2**30)[0] == "stream"
    mode, why = choose_mode("auto", 4.0, 2**30)
    assert mode == "memory" and "within the budget 4.00 GiB" in why
    assert choose_mode("memory", 0.001, 2**40)[0] == "memory"


def test_credentials_in_the_uri_are_refused() -> None:
    with pytest.raises(DatasetError, match="carries credentials"):
        StreamCorpus.open("s3://bucket/data?access_key=AKIA&secret_key=x")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def s3_uri(corpus: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    moto_server = pytest.importorskip("moto.server")
    import pyarrow.fs as pafs

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        s3 = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", region="us-east-1",
                               allow_bucket_creation=True)
        s3.create_dir("ecg")
        pafs.copy_files(str(corpus), "ecg/synth", source_filesystem=pafs.LocalFileSystem(), destination_filesystem=s3)
        yield f"s3://ecg/synth?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    finally:
        server.stop()


def test_s3_shards_stream_the_same_batches_as_local_ones(corpus: Path, s3_uri: str, tmp_path: Path) -> None:
    part = Part(1, 2, 0, 1)
    local = all_batches(StreamSource([StreamCorpus.open(corpus)], buffer=30), part, epoch=1)
    remote = all_batches(StreamSource([StreamCorpus.open(s3_uri)], buffer=30), part, epoch=1)
    assert len(local) == 9 and all(np.array_equal(a, b) for a, b in zip(local, remote, strict=True))

    cache = ShardCache(tmp_path / "cache")
    cached = StreamSource([StreamCorpus.open(s3_uri, cache=cache)], buffer=30)
    assert all(np.array_equal(a, b) for a, b in zip(local, all_batches(cached, part, epoch=1), strict=True))
    files = sorted((tmp_path / "cache").rglob("*.parquet"))
    assert files and not list((tmp_path / "cache").rglob("*.tmp"))  # complete, verified copies only
    assert all(np.array_equal(a, b) for a, b in zip(all_batches(cached, part, epoch=2),
                                                    all_batches(StreamSource([StreamCorpus.open(corpus)], buffer=30),
                                                                part, epoch=2), strict=True))


def test_cache_refuses_a_shard_whose_hash_differs(corpus: Path, tmp_path: Path) -> None:
    import pyarrow.fs as pafs

    shard = next((corpus / "shards").glob("*.parquet"))
    with pytest.raises(DatasetError, match="sha256 does not match"):
        ShardCache(tmp_path).local(pafs.LocalFileSystem(), str(shard), "0" * 64, str(shard))
    assert not list(tmp_path.rglob("*.parquet")) and not list(tmp_path.rglob("*.tmp"))


def test_decoded_cache_streams_the_same_batches_as_the_shards(corpus: Path, tmp_path: Path) -> None:
    part, plain = Part(), StreamSource([StreamCorpus.open(corpus)], buffer=30)
    cached = StreamSource([StreamCorpus.open(corpus, cache=ShardCache(tmp_path))], buffer=30)
    for epoch in (0, 1):  # epoch 0 decodes the shards into the cache, epoch 1 memory-maps them
        assert all(np.array_equal(a, b) for a, b in zip(all_batches(plain, part, epoch),
                                                        all_batches(cached, part, epoch), strict=True))
    decoded = sorted(tmp_path.rglob("*.i16le"))
    assert len(decoded) == 8 and not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob("*.parquet"))
    assert sum(f.stat().st_size for f in decoded) == open_dataset(corpus).store.data.nbytes
    decoded[0].write_bytes(b"\0" * 10)  # a wrong size is never served: decoded again
    assert all(np.array_equal(a, b) for a, b in zip(all_batches(plain, part, 2), all_batches(cached, part, 2), strict=True))
    assert sum(f.stat().st_size for f in decoded) == open_dataset(corpus).store.data.nbytes


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_full_cache_disk_slows_streaming_down_instead_of_failing_it(
    where: str, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    """ENOSPC while the cache writes (at fsync: delayed allocation) costs speed, not the trial: the
    batches are those of the shards, nothing partial is left in the cache, one warning says why."""
    import errno
    import logging

    import ecg_tune.data.shard_cache as shard_cache

    uri = str(corpus) if where == "local" else request.getfixturevalue("s3_uri")
    part, plain = Part(), StreamSource([StreamCorpus.open(corpus)], buffer=30)
    full_root = tmp_path / "full"
    cached = StreamSource([StreamCorpus.open(uri, cache=ShardCache(full_root))], buffer=30)

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shard_cache.os, "fsync", disk_full)
    with caplog.at_level(logging.WARNING, logger="ecg_tune.data.stream_corpus"):
        for epoch in (0, 1):
            assert all(np.array_equal(a, b) for a, b in zip(all_batches(plain, part, epoch),
                                                            all_batches(cached, part, epoch), strict=True))
    warned = [r.getMessage() for r in caplog.records if "without the cache" in r.getMessage()]
    assert len(warned) == 1 and str(full_root) in warned[0] and "No space left" in warned[0]
    assert not [f for f in full_root.rglob("*") if f.is_file()], "no partial file stays in the cache"
    # Any other write error still stops the read, naming the shard and the cache.
    monkeypatch.setattr(shard_cache.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    broken = StreamSource([StreamCorpus.open(uri, cache=ShardCache(tmp_path / "eio"))], buffer=30)
    with pytest.raises(DatasetError, match=r"shard-.*cannot (write|copy) the .*cache .*I/O error"):
        all_batches(broken, part, 0)


PEAK_RSS = textwrap.dedent("""
    import sys
    from ecg_tune.data.stream import Part, StreamSource
    from ecg_tune.data.stream_corpus import StreamCorpus
    source = StreamSource([StreamCorpus.open(sys.argv[1])], buffer=256)
    stream = source.part_stream(Part(), window=250, batch_size=64, seed=0)
    n = sum(len(b) for b in stream.batches(0))
    # VmHWM: ru_maxrss would include the RSS of the parent (pytest) at fork, carried across exec.
    print(n, open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
""")


def test_peak_memory_of_streaming_does_not_grow_with_the_corpus(corpus: Path, tmp_path: Path) -> None:
    big = replicate(corpus, tmp_path / "big", 8)  # 2,400 records, 55 MiB of int16 signal
    peaks = {}
    for name, path in (("small", corpus), ("big", big)):
        out = subprocess.run([sys.executable, "-c", PEAK_RSS, str(path)], capture_output=True, text=True, check=True)
        windows, peak_kib = map(int, out.stdout.split())
        peaks[name] = peak_kib
        assert windows == (300 if name == "small" else 2400) // 64 * 64
    # 8x the records, 48 MiB more in memory for the in-memory store; the stream stays within 15 %.
    assert peaks["big"] < 1.15 * peaks["small"], peaks
