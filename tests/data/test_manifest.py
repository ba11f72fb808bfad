"""manifest.json: round trip, validation, label counts and normalization statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecg_tune.data.manifest import FORMAT_VERSION, Manifest, label_set_summary, normalization
from ecg_tune.errors import DatasetError


def _manifest() -> Manifest:
    return Manifest(
        source="ptbxl", source_version="v", lead_names=["I", "II"], fs=100.0,
        normalization={"mean": [0.0, 0.1], "std": [1.0, 0.5], "folds": list(range(1, 9))},
        label_sets={"all": {"vocabulary": ["A"], "counts_per_fold": {"A": {"1": 1}}}}, default_label_set="all",
        shards=[{"file": "shards/shard-00000.parquet", "rows": 1, "sha256": "0" * 64}],
        quarantine=[{"record": "2", "path": "/x/2.hea", "reason": "signal file is missing"}], n_records=1,
    )


def test_round_trip(tmp_path):
    m = _manifest()
    m.save(tmp_path / "manifest.json")
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert data["format_version"] == FORMAT_VERSION == 1
    assert data["signal_encoding"] == {"dtype": "int16", "units_per_mv": 1000.0, "layout": "time-major"}
    assert set(data) >= {"source", "source_version", "created", "lead_names", "fs", "normalization", "label_sets",
                         "default_label_set", "shards", "quarantine", "n_records", "clipped_samples"}
    assert Manifest.load(tmp_path / "manifest.json") == m
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temp file left


def test_validation_names_the_file(tmp_path):
    path = tmp_path / "manifest.json"
    with pytest.raises(DatasetError, match="no manifest"):
        Manifest.load(path)
    path.write_text("{nope")
    with pytest.raises(DatasetError, match="not valid JSON"):
        Manifest.load(path)
    data = _manifest().to_dict()
    path.write_text(json.dumps({**data, "format_version": 2}))
    with pytest.raises(DatasetError, match="format_version 2"):
        Manifest.load(path)
    del data["shards"]
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"manifest.json: missing key\(s\) shards"):
        Manifest.load(path)


def test_label_set_summary_counts_records_per_fold():
    labels = [{"all": ["A", "B"]}, {"all": ["A"]}, {"all": ["A", "A"]}, {"rhythm": ["SR"]}]
    summary = label_set_summary(labels, [1, 1, 2, 10], ["all", "rhythm"])
    assert summary["all"]["vocabulary"] == ["A", "B"]
    assert summary["all"]["counts_per_fold"]["A"] == {"1": 2, "2": 1, "10": 0}
    assert summary["rhythm"]["counts_per_fold"] == {"SR": {"1": 0, "2": 0, "10": 1}}


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 30), offset=st.integers(-20000, 20000))
def test_normalization_equals_numpy_over_training_folds(seed, n, offset):
    rng = np.random.default_rng(seed)
    records = [np.clip(rng.normal(offset, 3000, (int(rng.integers(1, 500)), 3)), -32768, 32767).astype(np.int16)
               for _ in range(n)]
    folds = rng.integers(1, 11, n)
    sums = [r.astype(np.int64).sum(axis=0).tolist() for r in records]
    squares = [(r.astype(np.int64) ** 2).sum(axis=0).tolist() for r in records]
    norm = normalization(sums, squares, [len(r) for r in records], folds.tolist(), 3, 1000.0)
    train = [r for r, f in zip(records, folds) if f <= 8] or records
    stacked = np.concatenate(train).astype(np.float64) / 1000.0
    np.testing.assert_allclose(norm["mean"], stacked.mean(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(norm["std"], np.maximum(stacked.std(axis=0), 1e-3), rtol=1e-6, atol=1e-12)
    assert norm["folds"] == (list(range(1, 9)) if (folds <= 8).any() else sorted(set(folds.tolist())))
