"""Leakage guard on the real samples: PTB-XL duplicates, PTB-XL vs itself, CinC's PTB-XL copy."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from ecg_tune.data import duplicate_groups, find_leakage, ingest, open_dataset, write_dataset
from ecg_tune.data.leads import DEFAULT_ORDER
from ecg_tune.data.record import RawRecord


@pytest.fixture(scope="module")
def ptbxl(ptbxl_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("ptbxl")
    ingest("ptbxl", ptbxl_root, out, workers=1, progress=False)
    return open_dataset(out)


def test_ptbxl_sample_exact_duplicates(ptbxl, ptbxl_root):
    # The data README speaks of 7 duplicate pairs; this 500-record sample holds 2 byte-identical
    # pairs (137/138 and 143/144 also share patient and time but their signals differ).
    assert duplicate_groups(ptbxl) == [["00456", "00457"], ["00459", "00460"]]
    db = pd.read_csv(ptbxl_root / "ptbxl_database.csv", index_col="ecg_id")
    for a, b in ((456, 457), (459, 460)):
        assert db.loc[a, ["patient_id", "recording_date"]].tolist() == db.loc[b, ["patient_id", "recording_date"]].tolist()


def test_ptbxl_against_itself_flags_every_validation_and_test_record(ptbxl):
    report = find_leakage(ptbxl, ptbxl)
    np.testing.assert_array_equal(report.indices, ptbxl.indices([9, 10]))
    assert report.count == 147 and report.by_reason == {"origin_id": 147, "signal_hash": 147}
    assert report.exclude(np.arange(len(ptbxl))).tolist() == ptbxl.indices(range(1, 9)).tolist()
    assert find_leakage(ptbxl, ptbxl, folds=[10]).count == 66


def test_cinc_copy_of_ptbxl_is_caught_by_origin(ptbxl, cinc_root, tmp_path):
    root = tmp_path / "cinc"
    root.mkdir()
    for path in (cinc_root / "PTB_PTBXL").glob("HR000*"):
        shutil.copy(path, root)
    ingest("cinc", root, tmp_path / "out", workers=1, progress=False)
    cinc = open_dataset(tmp_path / "out")
    report = find_leakage(cinc, ptbxl)
    # HR00008-HR00010 are PTB-XL records 8, 9, 10: strat folds 9, 10, 9.
    assert report.record_ids == ["HR00008", "HR00009", "HR00010"]
    assert report.by_reason["origin_id"] == 3


def test_renamed_copy_is_caught_by_signal_hash(ptbxl, tmp_path):
    test_row = int(ptbxl.indices([10])[0])
    copy = ptbxl.store.signal(test_row).astype(np.float64)
    other = np.random.default_rng(0).normal(0, 0.3, copy.shape)
    records = [RawRecord("x1", "other", 100.0, copy, list(DEFAULT_ORDER), fold=1),
               RawRecord("x2", "other", 100.0, other, list(DEFAULT_ORDER), fold=1)]
    write_dataset(records, tmp_path, source="other", source_version="0", fs=100)
    report = find_leakage(open_dataset(tmp_path), ptbxl)
    assert report.record_ids == ["x1"] and report.by_reason == {"origin_id": 0, "signal_hash": 1}
