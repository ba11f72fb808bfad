"""open_dataset / ECGDataset: store, records, targets, folds, normalization, URIs, cache, corruption."""

from __future__ import annotations

import ast

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import pytest
import wfdb

from ecg_tune.data import ECGDataset, format_summary, ingest, open_dataset, write_dataset
from ecg_tune.data import dataset as dataset_module
from ecg_tune.data import shards as shard_io
from ecg_tune.data.dataset import summarize
from ecg_tune.data.leads import DEFAULT_ORDER
from ecg_tune.data.record import RawRecord
from ecg_tune.errors import DatasetError


@pytest.fixture(scope="module")
def ptbxl_dir(ptbxl_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("ptbxl")
    ingest("ptbxl", ptbxl_root, out, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def ds(ptbxl_dir) -> ECGDataset:
    return open_dataset(ptbxl_dir)


@pytest.fixture(scope="module")
def db(ptbxl_root) -> pd.DataFrame:
    return pd.read_csv(ptbxl_root / "ptbxl_database.csv", index_col="ecg_id")


def test_records_frame_and_store(ds):
    assert len(ds) == len(ds.records) == len(ds.store) == 500
    expected = {"record_id", "source", "origin_id", "patient_id", "fs", "n_samples", "signal_hash", "fold", "age", "sex",
                "labels"}
    for name in ("all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm"):
        expected |= {f"label_{name}", f"labels_{name}"}
    assert set(ds.records.columns) == expected
    assert ds.store.data.shape == (500 * 1000, 12) and ds.store.data.dtype == np.int16
    assert ds.lead_names == DEFAULT_ORDER and ds.fs == 100.0
    assert (ds.store.lengths == ds.records["n_samples"].to_numpy()).all()
    assert ds.records["labels"].iloc[0] == ds.records["labels_all"].iloc[0] == ["LVOLT", "NORM", "SR"]


def test_signal_matches_wfdb(ds, ptbxl_root, db):
    for rid in ("00001", "00250", "00500"):
        sig = ds.signal(rid)
        assert sig.dtype == np.float32 and sig.shape == (12, 1000)
        expected, fields = wfdb.rdsamp(str(ptbxl_root / db.loc[int(rid), "filename_lr"]))
        order = [fields["sig_name"].index(n.upper() if n.startswith("a") else n) for n in DEFAULT_ORDER]
        np.testing.assert_allclose(sig, expected[:, order].T, atol=0.0005 + 1e-6)
    with pytest.raises(KeyError, match="99999"):
        ds.signal("99999")


def test_targets_and_indices(ds, db):
    vocab = ds.label_vocabulary("all")
    assert vocab == sorted(vocab) == ds.manifest.label_sets["all"]["vocabulary"]
    y = ds.targets("all")
    assert y.dtype == np.float32 and y.shape == (500, len(vocab))
    for i in (0, 123, 499):
        codes = ast.literal_eval(db.loc[int(ds.records.record_id.iloc[i]), "scp_codes"])
        assert [vocab[j] for j in np.flatnonzero(y[i])] == sorted(codes)
    test = ds.indices([10])
    assert test.dtype == np.int64
    assert (ds.records.record_id.iloc[test].astype(int).map(db.strat_fold) == 10).all()
    assert len(test) == (db.strat_fold == 10).sum()
    np.testing.assert_array_equal(ds.targets("all", test), y[test])
    assert ds.targets().shape == y.shape  # default label set
    assert ds.targets("superdiagnostic").shape == (500, 5)
    with pytest.raises(DatasetError, match="no label set 'bogus'"):
        ds.targets("bogus")


def test_normalization_uses_training_folds_only(ds):
    mean, std = ds.normalization
    train = ds.indices(range(1, 9))
    x = np.concatenate([ds.store.signal(int(i)) for i in train], axis=1).astype(np.float64)
    np.testing.assert_allclose(mean, x.mean(axis=1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(std, x.std(axis=1), rtol=1e-5)
    everything = np.concatenate([ds.store.signal(i) for i in range(len(ds))], axis=1)
    assert not np.allclose(mean, everything.mean(axis=1), rtol=1e-3, atol=0)
    assert ds.manifest.normalization["folds"] == list(range(1, 9))


def test_summary(ds):
    s = ds.summary()
    assert s["records"] == 500 and s["folds"]["9"] == 81 and s["quarantine"]["count"] == 0
    assert s["label_sets"]["all"]["classes"] == 57 and s["label_sets"]["superdiagnostic"]["labelled_records"] == 488
    text = format_summary(s)
    assert "500 in 1 shard(s)" in text and "all (default): 57 classes" in text and "9:81" in text


def test_summarize_gives_the_opened_datasets_summary_without_loading_signals(ptbxl_dir, ds, tmp_path, monkeypatch):
    assert summarize(ptbxl_dir) == ds.summary()
    assert summarize(ptbxl_dir.as_uri()) == ds.summary()
    from ecg_tune.data.synthetic import write_synthetic

    write_synthetic(tmp_path / "syn", n_records=30, seed=1)
    assert summarize(tmp_path / "syn") == open_dataset(tmp_path / "syn").summary()
    monkeypatch.setattr(dataset_module, "_copy_signals", lambda *a: pytest.fail("signals were loaded"))
    summarize(tmp_path / "syn")
    # The shards are still checked against the manifest.
    shard = tmp_path / "syn" / "shards" / "shard-00000.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"shard-00000.parquet: sha256 does not match"):
        summarize(tmp_path / "syn")


def test_file_uri(ptbxl_dir):
    assert len(open_dataset(ptbxl_dir.as_uri())) == 500


def test_remote_dataset_is_copied_once_into_the_cache(ptbxl_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ECG_TUNE_CACHE", str(tmp_path / "cache"))
    remote = pafs.SubTreeFileSystem(str(ptbxl_dir.parent), pafs.LocalFileSystem())  # stands in for s3://...
    first = open_dataset(ptbxl_dir.name, filesystem=remote)
    assert first.path.parent == tmp_path / "cache" and len(first) == 500
    copied = first.path / "shards" / "shard-00000.parquet"
    mtime = copied.stat().st_mtime_ns
    second = open_dataset(ptbxl_dir.name, filesystem=remote)
    assert second.path == first.path and copied.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(second.store.data, first.store.data)
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]
    assert summarize(ptbxl_dir.name, filesystem=remote) == first.summary()  # from the cached copy


def test_corrupt_or_missing_shard_names_the_shard(ptbxl_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(ptbxl_dir, copy)
    shard = copy / "shards" / "shard-00000.parquet"
    data = bytearray(shard.read_bytes())
    data[1000] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"shard-00000.parquet: sha256 does not match"):
        open_dataset(copy)
    shard.unlink()
    with pytest.raises(DatasetError, match=r"shard-00000.parquet: shard listed in the manifest is missing"):
        open_dataset(copy)
    with pytest.raises(DatasetError, match="no manifest"):
        open_dataset(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(tmp_path / "nowhere")


def test_many_shards_row_groups_and_lengths(tmp_path, monkeypatch):
    monkeypatch.setattr(shard_io, "ROW_GROUP_BYTES", 3000)  # several row groups per shard
    rng = np.random.default_rng(0)
    records = [RawRecord(f"r{i:02d}", "syn", 100.0, np.round(rng.normal(0, 1, (12, int(n))), 3), list(DEFAULT_ORDER),
                         labels={"all": ["a"] if i % 2 else []}, fold=1 + i % 10)
               for i, n in enumerate(rng.integers(50, 400, 25))]
    write_dataset(records, tmp_path, source="syn", source_version="0", fs=100, records_per_shard=7)
    ds = open_dataset(tmp_path)
    assert len(ds.manifest.shards) == 4
    for i, rec in enumerate(records):
        np.testing.assert_allclose(ds.signal(rec.record_id), rec.signal, atol=0.0005 + 1e-6)
        assert ds.store.signal(i).shape == rec.signal.shape
    assert ds.targets("all")[:, 0].tolist() == [float(i % 2) for i in range(25)]
