"""Source readers on the real samples and on tiny files written in each corpus's published layout."""

from __future__ import annotations

import ast
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import wfdb
from hypothesis import given, settings
from hypothesis import strategies as st

from ecg_tune.data.sources import SOURCES, build_source
from ecg_tune.data.sources.base import inside, normalise_leads, parse_age
from ecg_tune.data.sources.cinc import parse_comments
from ecg_tune.data.sources.code15 import CLASSES, trim_padding
from ecg_tune.data.sources.ptbxl import parse_scp_codes
from ecg_tune.data.sources.wfdb import _parse_gain, parse_header, read_physical
from ecg_tune.errors import ConfigError, DatasetError, RecordError

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def test_registry_lists_every_source():
    assert SOURCES.names() == ["chapman", "cinc", "code15", "ptbxl", "wfdb"]
    for name in SOURCES:
        src = build_source(name)
        assert src.name == name and src.default_label_set


def test_unknown_source_option_names_the_key():
    with pytest.raises(ConfigError, match="source.bogus"):
        build_source("ptbxl", {"bogus": 1})
    with pytest.raises(ConfigError, match="which"):
        build_source("ptbxl", {"which": 250})


# ------------------------------------------------------------------------------------------------ PTB-XL


@pytest.fixture(scope="module")
def ptbxl_refs(ptbxl_root):
    return build_source("ptbxl").list_records(ptbxl_root)


def test_ptbxl_refs_are_cheap_and_picklable(ptbxl_refs):
    assert len(ptbxl_refs) == 500
    assert pickle.loads(pickle.dumps(ptbxl_refs[:3])) == ptbxl_refs[:3]
    assert all(r.error is None for r in ptbxl_refs)


def test_ptbxl_label_sets_follow_scp_statements(ptbxl_root, ptbxl_refs):
    """Independent recomputation of the benchmark's aggregations from the two CSVs."""
    db = pd.read_csv(ptbxl_root / "ptbxl_database.csv", index_col="ecg_id")
    statements = pd.read_csv(ptbxl_root / "scp_statements.csv", index_col=0)
    diag = statements[statements.diagnostic == 1]
    for ref in ptbxl_refs[::7]:
        codes = ast.literal_eval(db.loc[int(ref.record_id), "scp_codes"])
        labels = ref.meta["labels"]
        assert labels["all"] == sorted(codes)
        assert labels["diagnostic"] == sorted(c for c in codes if c in diag.index)
        assert labels["superdiagnostic"] == sorted({diag.loc[c, "diagnostic_class"] for c in codes if c in diag.index})
        assert labels["subdiagnostic"] == sorted({diag.loc[c, "diagnostic_subclass"] for c in codes if c in diag.index})
        assert labels["form"] == sorted(c for c in codes if statements.loc[c, "form"] == 1)
        assert labels["rhythm"] == sorted(c for c in codes if statements.loc[c, "rhythm"] == 1)
        assert ref.meta["fold"] == db.loc[int(ref.record_id), "strat_fold"]


def test_ptbxl_read_matches_wfdb(ptbxl_root, ptbxl_refs):
    src = build_source("ptbxl")
    db = pd.read_csv(ptbxl_root / "ptbxl_database.csv", index_col="ecg_id")
    for ref in ptbxl_refs[:5]:
        rec = src.read(ref)
        expected, fields = wfdb.rdsamp(str(ptbxl_root / db.loc[int(ref.record_id), "filename_lr"]))
        np.testing.assert_allclose(rec.signal, expected.T, atol=1e-12)
        assert rec.fs == fields["fs"] == 100
        assert rec.lead_names == LEADS  # AVR/AVL/AVF normalised
        assert rec.sex == ("M" if db.loc[int(ref.record_id), "sex"] == 0 else "F")
        assert rec.patient_id == str(int(db.loc[int(ref.record_id), "patient_id"]))
    assert src.origin_id(src.read(ptbxl_refs[0])) == "ptbxl:1"


def test_scp_codes_are_parsed_safely():
    assert parse_scp_codes("{'NORM': 100.0, 'SR': 0.0}") == ["NORM", "SR"]
    assert parse_scp_codes("{'IMI': nan}") == ["IMI"]
    for bad in ("__import__('os').system('true')", "{'NORM': 100.0", "[1, 2]", float("nan")):
        with pytest.raises((ValueError, SyntaxError)):
            parse_scp_codes(bad)


def _literal_keys(text: str):
    """The reference reading: literal_eval with bare nan as None; the error type if it fails."""
    import re

    try:
        value = ast.literal_eval(re.sub(r"\bnan\b", "None", text))
    except (ValueError, SyntaxError) as e:
        return type(e)
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        return ValueError
    return list(value)


_KEY = st.text(st.sampled_from("AZaz09_/()-+. '\\\n\"x"), max_size=6)
_VALUE = st.one_of(st.sampled_from(["100.0", "01", "00", "007.5", "01e3", "1.e2", "+.5", "\x0b1.0", "1.0\t", "0.0", "nan", "15.", ".5", "-1", "1e3", "inf", "None", "'x'", "1_0"]),
                   st.floats(allow_nan=False, allow_infinity=False).map(repr))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_KEY, _VALUE), max_size=5), st.sampled_from([", ", ",", " , "]), st.booleans(),
       st.sampled_from(["{", "{ ", "{\n"]))
def test_scp_codes_fast_reading_agrees_with_literal_eval(items, sep, trailing, opening):
    text = opening + sep.join(f"'{k}': {v}" for k, v in items) + ("," if trailing and items else "") + "}"
    expected = _literal_keys(text)
    if isinstance(expected, list):
        assert parse_scp_codes(text) == expected
    else:
        with pytest.raises((ValueError, SyntaxError)):
            parse_scp_codes(text)


# ------------------------------------------------------------------------------------------------ CinC


def test_cinc_reads_every_sample_record(cinc_root):
    src = build_source("cinc")
    refs = src.list_records(cinc_root)
    assert len(refs) == 70
    rates = set()
    for ref in refs:
        rec = src.read(ref)
        header = wfdb.rdheader(ref.path[:-4])
        dx = next(c for c in header.comments if c.startswith("Dx"))
        assert rec.labels == {"snomed": sorted(set(dx.split(":")[1].strip().split(",")))}
        assert rec.signal.shape == (12, header.sig_len)
        assert rec.fold is None and rec.patient_id is None
        rates.add(rec.fs)
    assert rates == {500.0, 1000.0}


def test_cinc_record_matches_wfdb_and_origin(cinc_root):
    src = build_source("cinc")
    ref = next(r for r in src.list_records(cinc_root) if r.record_id.startswith("HR"))
    rec = src.read(ref)
    expected, _ = wfdb.rdsamp(ref.path[:-4])
    np.testing.assert_allclose(rec.signal, expected.T, atol=1e-12)
    assert src.origin_id(rec) == f"ptbxl:{int(ref.record_id[2:])}"
    other = next(r for r in src.list_records(cinc_root) if r.record_id.startswith("A"))
    assert src.origin_id(src.read(other)) == f"cinc:{other.record_id}"


def test_cinc_comments():
    assert parse_comments(["Age: NaN", "Sex: Unknown", "Dx: 1,22"], "x") == (["1", "22"], None, None)
    assert parse_comments(["Age: 61", "Sex: Female", "Dx: 164889003"], "x") == (["164889003"], 61.0, "F")
    with pytest.raises(RecordError, match="malformed #Dx"):
        parse_comments(["Dx: 1;AF"], "x")
    with pytest.raises(RecordError, match="non-numeric age"):
        parse_comments(["Age: sixty"], "x")


# ------------------------------------------------------------------------------------------------ WFDB


def test_header_parser_on_ptbxl_header(ptbxl_root):
    h = parse_header(ptbxl_root / "records100/00000/00001_lr.hea")
    assert (h.fs, h.n_samples, len(h.signals)) == (100.0, 1000, 12)
    assert h.signals[3].name == "AVR" and h.signals[0].gain == 1000.0 and h.signals[0].baseline == 0


@given(gain=st.floats(0.01, 1e5, allow_nan=False), baseline=st.integers(-5000, 5000), units=st.sampled_from(["mV", "uV", "V"]))
def test_gain_field(gain, baseline, units):
    assert _parse_gain(f"{gain!r}({baseline})/{units}", Path("h")) == (gain, baseline, units)
    assert _parse_gain(f"{gain!r}", Path("h")) == (gain, None, "mV")
    assert _parse_gain("0", Path("h"))[0] == 200.0  # WFDB default gain


def _write_wfdb(folder: Path, name: str, signal: np.ndarray, fmt: str = "16", units: str = "mV", fs: float = 250):
    folder.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(name, fs=fs, units=[units] * signal.shape[1], sig_name=LEADS[: signal.shape[1]],
                p_signal=signal, fmt=[fmt] * signal.shape[1], write_dir=str(folder))


def test_wfdb_source_fast_path_and_fallback_agree(tmp_path):
    rng = np.random.default_rng(0)
    signal = np.round(rng.normal(0, 0.5, (600, 12)), 3)
    _write_wfdb(tmp_path / "a", "r16", signal, "16")
    _write_wfdb(tmp_path / "b" / "deep", "r212", signal, "212")  # format 212: read by wfdb
    _write_wfdb(tmp_path / "c", "ruv", signal * 1000, "16", units="uV")
    (tmp_path / "labels.csv").write_text("record_id,labels\na/r16,AF;SR\nr212,\"X, Y\"\n")
    src = build_source("wfdb", {"label_csv": "labels.csv"})
    refs = {r.record_id: r for r in src.list_records(tmp_path)}
    assert sorted(refs) == ["a/r16", "b/deep/r212", "c/ruv"]
    records = {rid: src.read(ref) for rid, ref in refs.items()}
    for rec in records.values():
        np.testing.assert_allclose(rec.signal, signal.T, atol=2e-3)  # header gains quantise
    assert records["a/r16"].labels == {"labels": ["AF", "SR"]}
    assert records["b/deep/r212"].labels == {"labels": ["X", "Y"]}  # matched by bare name
    assert records["c/ruv"].labels == {"labels": []}


def test_signal_file_escaping_the_folder_is_never_read(tmp_path):
    rng = np.random.default_rng(1)
    _write_wfdb(tmp_path / "outside", "secret", rng.normal(0, 1, (100, 12)))
    root = tmp_path / "root"
    _write_wfdb(root, "rec", rng.normal(0, 1, (100, 12)))
    hea = root / "rec.hea"
    hea.write_text(hea.read_text().replace("rec.dat", "../outside/secret.dat"))
    src = build_source("wfdb")
    with pytest.raises(RecordError, match="leaves the record's folder") as e:
        src.read(src.list_records(root)[0])
    assert e.value.path == str(hea)


def test_inside():
    root = Path("/data/root")
    assert inside(root, "records100/00000/00001_lr.hea") == root / "records100/00000/00001_lr.hea"
    for bad in ("../x", "a/../../x", "/etc/passwd", "", "a\\..\\x", "."):
        assert inside(root, bad) is None


def test_lead_names():
    assert normalise_leads(["AVR", " avl", "I"], "p")[0] == ["aVR", "aVL", "I"]
    names, signs = normalise_leads(["-aVR", "II"], "p")
    assert names == ["aVR", "II"] and signs.tolist() == [-1.0, 1.0]
    with pytest.raises(RecordError, match="unknown lead"):
        normalise_leads(["I", "X7"], "p")
    with pytest.raises(RecordError, match="appears twice"):
        normalise_leads(["I", "i"], "p")


def test_parse_age():
    assert parse_age("NaN", "p") is None and parse_age("Unknown", "p") is None and parse_age(float("nan"), "p") is None
    assert parse_age(" 61 ", "p") == 61.0
    with pytest.raises(RecordError, match="non-numeric age 'old'"):
        parse_age("old", "p")


def test_empty_or_missing_folder_is_a_dataset_error(tmp_path):
    for name in ("ptbxl", "cinc", "wfdb", "code15", "chapman"):
        with pytest.raises(DatasetError, match=str(tmp_path / "nope")):
            build_source(name).list_records(tmp_path / "nope")
        with pytest.raises(DatasetError, match=str(tmp_path)):
            build_source(name).list_records(tmp_path)


def test_ptbxl_missing_columns_name_the_csv(tmp_path, ptbxl_root):
    shutil.copy(ptbxl_root / "scp_statements.csv", tmp_path)
    db = pd.read_csv(ptbxl_root / "ptbxl_database.csv").drop(columns=["strat_fold"])
    db.to_csv(tmp_path / "ptbxl_database.csv", index=False)
    with pytest.raises(DatasetError, match=r"ptbxl_database.csv: missing column\(s\) strat_fold"):
        build_source("ptbxl").list_records(tmp_path)


# ------------------------------------------------------------------------------------------------ CODE


def _code_tracing(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.zeros((4096, 12), dtype=np.float32)
    pad = (4096 - n) // 2
    t[pad : pad + n] = rng.normal(0, 0.3, (n, 12))
    return t


def test_code_test_set_layout(tmp_path):
    rng = np.random.default_rng(2)
    tracings = np.stack([_code_tracing(rng, 4000), _code_tracing(rng, 2800), _code_tracing(rng, 4096)])
    with h5py.File(tmp_path / "ecg_tracings.hdf5", "w") as f:
        f.create_dataset("tracings", data=tracings)
    pd.DataFrame({"age": [34, 70, "NaN"], "sex": ["M", "F", "F"]}).to_csv(tmp_path / "attributes.csv", index=False)
    (tmp_path / "annotations").mkdir()
    gold = pd.DataFrame(np.array([[0, 0, 1, 0, 0, 0], [1, 0, 0, 0, 0, 1], [0] * 6]), columns=CLASSES)
    gold.to_csv(tmp_path / "annotations" / "gold_standard.csv", index=False)
    src = build_source("code15")
    refs = src.list_records(tmp_path)
    recs = [src.read(pickle.loads(pickle.dumps(r))) for r in refs]
    assert [r.signal.shape[1] for r in recs] == [4000, 2800, 4096]
    np.testing.assert_allclose(recs[1].signal, tracings[1][648:-648].T, rtol=1e-6)
    assert [r.labels["code"] for r in recs] == [["LBBB"], ["1dAVb", "ST"], []]
    assert (recs[0].age, recs[0].sex, recs[2].age, recs[1].sex) == (34.0, "M", None, "F")
    assert recs[0].fs == 400.0 and recs[0].lead_names == LEADS
    assert src.origin_id(recs[1]) == "code-test:1"


def test_code_padding_trim_is_symmetric():
    t = np.zeros((10, 2))
    t[3:8] = 1.0  # 3 zero rows before, 2 after: 5 // 2 = 2 from each end
    assert trim_padding(t).shape == (6, 2)
    assert trim_padding(np.ones((4, 2))).shape == (4, 2)


def test_code15_percent_layout(tmp_path):
    rng = np.random.default_rng(3)
    with h5py.File(tmp_path / "exams_part0.hdf5", "w") as f:
        f.create_dataset("tracings", data=np.stack([_code_tracing(rng, 4000), _code_tracing(rng, 4000), np.zeros((4096, 12))]))
        f.create_dataset("exam_id", data=np.array([1001, 1002, 0]))
    exams = pd.DataFrame({
        "exam_id": [1002, 1001], "age": [50, 60], "is_male": [True, False], "patient_id": [7, 7],
        "trace_file": ["exams_part0.hdf5", "exams_part0.hdf5"], **{c: [0, 1] for c in CLASSES},
    })
    exams.to_csv(tmp_path / "exams.csv", index=False)
    src = build_source("code15")
    recs = {r.record_id: src.read(r) for r in src.list_records(tmp_path)}
    assert recs["1002"].sex == "M" and recs["1001"].labels["code"] == sorted(CLASSES)
    assert recs["1001"].patient_id == recs["1002"].patient_id == "7"
    assert not np.allclose(recs["1001"].signal, recs["1002"].signal)
    assert src.origin_id(recs["1001"]) == "code15:1001"


# ------------------------------------------------------------------------------------------------ Chapman


def _chapman(tmp_path: Path, rows: int = 3) -> np.ndarray:
    rng = np.random.default_rng(4)
    (tmp_path / "ECGData").mkdir()
    data = np.round(rng.normal(0, 300, (5000, 12)), 2)  # µV
    for i in range(rows):
        pd.DataFrame(data * (i + 1), columns=LEADS).to_csv(tmp_path / "ECGData" / f"MUSE_{i}.csv", index=False)
    pd.DataFrame({
        "FileName": [f"MUSE_{i}" for i in range(rows)], "Rhythm": ["SB", "AFIB", "SR"][:rows],
        "Beat": ["RBBB TWC", "NONE", "LVH"][:rows], "PatientAge": [85, 59, 20][:rows], "Gender": ["MALE", "FEMALE", "MALE"][:rows],
    }).to_csv(tmp_path / "Diagnostics.csv", index=False)
    return data


def test_chapman_layout_in_microvolts(tmp_path):
    data = _chapman(tmp_path)
    src = build_source("chapman")
    recs = [src.read(r) for r in src.list_records(tmp_path)]
    np.testing.assert_allclose(recs[1].signal, 2 * data.T / 1000)
    assert recs[0].labels == {"rhythm": ["SB"], "condition": ["RBBB", "TWC"], "all": ["RBBB", "SB", "TWC"]}
    assert recs[1].labels["condition"] == []
    assert (recs[0].age, recs[0].sex, recs[1].sex, recs[0].fs) == (85.0, "M", "F", 500.0)


def test_chapman_xlsx_without_openpyxl_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "Diagnostics.xlsx").write_bytes(b"PK")
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "openpyxl" else object())
    with pytest.raises(DatasetError, match="openpyxl"):
        build_source("chapman").list_records(tmp_path)


def test_chapman_filename_escaping_root(tmp_path):
    _chapman(tmp_path, rows=1)
    df = pd.read_csv(tmp_path / "Diagnostics.csv")
    df.loc[0, "FileName"] = "../../etc/passwd"
    df.to_csv(tmp_path / "Diagnostics.csv", index=False)
    src = build_source("chapman")
    with pytest.raises(RecordError, match="not a file name inside"):
        src.read(src.list_records(tmp_path)[0])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(LEADS), min_size=1, max_size=12, unique=True))
def test_read_physical_reorders_nothing(tmp_path_factory, leads):
    """Whatever subset of leads a header lists, the reader returns them in header order with header gains."""
    folder = tmp_path_factory.mktemp("h")
    rng = np.random.default_rng(len(leads))
    signal = np.round(rng.normal(0, 1, (50, len(leads))), 3)
    wfdb.wrsamp("r", fs=100, units=["mV"] * len(leads), sig_name=leads, p_signal=signal, fmt=["16"] * len(leads),
                write_dir=str(folder))
    h = parse_header(folder / "r.hea")
    assert [s.name for s in h.signals] == leads
    np.testing.assert_allclose(read_physical(h), signal.T, atol=1e-3)
