"""ingest / write_dataset on the real samples, on damaged copies of real records, and across kills."""

from __future__ import annotations

import ast
import hashlib
import importlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import wfdb
from scipy.signal import resample_poly

from ecg_tune.data import ingest, write_dataset
from ecg_tune.data.leads import DEFAULT_ORDER, PAPER_ORDER
from ecg_tune.data.record import RawRecord
from ecg_tune.data.shards import decode_signal
from ecg_tune.errors import DatasetError

ingest_module = importlib.import_module("ecg_tune.data.ingest")  # the module (ecg_tune.data.ingest is the function)


def _table(out: Path):
    manifest = json.loads((out / "manifest.json").read_text())
    return manifest, pd.concat([pq.read_table(out / s["file"]).to_pandas() for s in manifest["shards"]], ignore_index=True)


def _no_leftovers(out: Path) -> None:
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")], "temp files left behind"


@pytest.fixture(scope="module")
def ptbxl_out(ptbxl_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("ptbxl")
    ingest("ptbxl", ptbxl_root, out, workers=1, progress=False)
    return out


# ------------------------------------------------------------------------------------------------ real data


def test_ptbxl_sample_ingests_every_record(ptbxl_root, ptbxl_out):
    manifest, df = _table(ptbxl_out)
    db = pd.read_csv(ptbxl_root / "ptbxl_database.csv", index_col="ecg_id")
    assert manifest["n_records"] == len(df) == 500 and manifest["quarantine"] == []
    assert manifest["lead_names"] == list(DEFAULT_ORDER) and manifest["fs"] == 100.0
    assert list(df.record_id) == sorted(df.record_id)  # shards hold sorted ids
    ids = df.record_id.astype(int)
    assert [sorted(ast.literal_eval(db.loc[i, "scp_codes"])) for i in ids] == [list(x) for x in df.label_all]
    assert (df.fold.to_numpy() == db.loc[ids, "strat_fold"].to_numpy()).all()
    assert (df.patient_id == [str(int(p)) for p in db.loc[ids, "patient_id"]]).all()
    assert list(df.origin_id) == [f"ptbxl:{i}" for i in ids]
    assert manifest["default_label_set"] == "all" and len(manifest["label_sets"]["all"]["vocabulary"]) == 57
    for i in range(0, 500, 25):
        blob = df.signal.iloc[i]
        assert hashlib.sha256(blob).hexdigest() == df.signal_hash.iloc[i]
        decoded = decode_signal(blob, 12) / 1000.0
        expected, fields = wfdb.rdsamp(str(ptbxl_root / db.loc[ids.iloc[i], "filename_lr"]))
        order = [fields["sig_name"].index(n.upper() if n.startswith("a") else n) for n in DEFAULT_ORDER]
        np.testing.assert_allclose(decoded, expected[:, order], atol=0.0005 + 1e-9)  # within quantisation


def test_ptbxl_500hz_resampled_agrees_with_its_100hz_files(ptbxl_root, ptbxl_out, tmp_path):
    manifest = ingest("ptbxl", ptbxl_root, tmp_path, which=500, workers=1, progress=False)
    # The sample ships 500 Hz files for records 1-50 only; the rest are quarantined, naming the file.
    assert manifest.n_records == 50 and len(manifest.quarantine) == 450
    assert all(q["reason"] == "header file is missing" and q["path"].endswith("_hr.hea") for q in manifest.quarantine)
    _, hi = _table(tmp_path)
    _, lo = _table(ptbxl_out)
    lo = lo.set_index("record_id")
    db = pd.read_csv(ptbxl_root / "ptbxl_database.csv", index_col="ecg_id")
    ours, plain = [], []
    for rid, blob in zip(hi.record_id, hi.signal):
        mine = decode_signal(blob, 12) / 1000.0
        reference = decode_signal(lo.loc[rid, "signal"], 12) / 1000.0
        raw, fields = wfdb.rdsamp(str(ptbxl_root / db.loc[int(rid), "filename_hr"]))
        order = [fields["sig_name"].index(n.upper() if n.startswith("a") else n) for n in DEFAULT_ORDER]
        baseline = resample_poly(raw[:, order], 1, 5, axis=0)
        for lead in range(12):
            ours.append(np.corrcoef(mine[:, lead], reference[:, lead])[0, 1])
            plain.append(np.corrcoef(baseline[:, lead], reference[:, lead])[0, 1])
    assert np.nanmedian(ours) >= np.nanmedian(plain) - 1e-4 and np.nanmedian(ours) > 0.99


def test_cinc_sample_every_record_at_100hz(cinc_root, tmp_path):
    manifest = ingest("cinc", cinc_root, tmp_path, workers=1, progress=False)
    assert manifest.n_records == 70 and manifest.quarantine == []
    _, df = _table(tmp_path)
    headers = {p.stem: p for p in cinc_root.rglob("*.hea")}
    for row in df.itertuples():
        header = wfdb.rdheader(str(headers[row.record_id])[:-4])
        assert row.n_samples == int(np.floor(header.sig_len * 100 / header.fs + 0.5))
        assert len(row.signal) == row.n_samples * 12 * 2
        dx = next(c for c in header.comments if c.startswith("Dx")).split(":")[1].strip().split(",")
        assert list(row.label_snomed) == sorted(set(dx))
    assert set(df.fold) <= set(range(1, 11)) and df.fold.nunique() == 10
    assert manifest.default_label_set == "snomed"


def test_paper_lead_order(ptbxl_root, ptbxl_out, tmp_path):
    mini = _mini_ptbxl(ptbxl_root, tmp_path / "src", n=2)
    manifest = ingest("ptbxl", mini, tmp_path / "out", lead_order="paper", workers=1, progress=False)
    assert manifest.lead_names == list(PAPER_ORDER)
    _, paper = _table(tmp_path / "out")
    _, default = _table(ptbxl_out)
    a = decode_signal(paper.signal.iloc[0], 12)
    b = decode_signal(default.signal.iloc[0], 12)
    np.testing.assert_array_equal(a, b[:, [DEFAULT_ORDER.index(n) for n in PAPER_ORDER]])


# ------------------------------------------------------------------------------------------------ bad input


def _mini_ptbxl(ptbxl_root: Path, root: Path, n: int = 6) -> Path:
    (root / "records100" / "00000").mkdir(parents=True)
    for i in range(1, n + 1):
        for ext in (".hea", ".dat"):
            shutil.copy(ptbxl_root / "records100" / "00000" / f"{i:05d}_lr{ext}", root / "records100" / "00000")
    shutil.copy(ptbxl_root / "scp_statements.csv", root)
    db = pd.read_csv(ptbxl_root / "ptbxl_database.csv")
    db[db.ecg_id <= n].to_csv(root / "ptbxl_database.csv", index=False)
    return root


def _edit_header(path: Path, edit) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")


def _truncate(p: Path) -> str:
    dat = p / "records100/00000/00002_lr.dat"
    dat.write_bytes(dat.read_bytes()[:-240])
    return "signal file is truncated"


def _lead_count(p: Path) -> str:
    _edit_header(p / "records100/00000/00002_lr.hea", lambda ls: [ls[0].replace(" 12 ", " 11 ")] + ls[1:12])
    return "does not fit 11 leads"


def _nan_samples(p: Path) -> str:
    dat = p / "records100/00000/00002_lr.dat"
    raw = bytearray(dat.read_bytes())
    raw[24 * 10 : 24 * 10 + 2] = (-32768).to_bytes(2, "little", signed=True)  # sample 10 of lead I
    dat.write_bytes(bytes(raw))
    return "missing samples (NaN) in lead(s) I"


def _missing_signal(p: Path) -> str:
    (p / "records100/00000/00002_lr.dat").unlink()
    return "signal file is missing"


def _missing_header(p: Path) -> str:
    (p / "records100/00000/00002_lr.hea").unlink()
    return "header file is missing"


def _unknown_lead(p: Path) -> str:
    _edit_header(p / "records100/00000/00002_lr.hea", lambda ls: ls[:-1] + [ls[-1].replace(" V6", " V7")])
    return "unknown lead name 'V7'"


def _duplicate_lead(p: Path) -> str:
    _edit_header(p / "records100/00000/00002_lr.hea", lambda ls: ls[:-1] + [ls[-1].replace(" V6", " V5")])
    return "lead V5 appears twice"


def _zero_fs(p: Path) -> str:
    _edit_header(p / "records100/00000/00002_lr.hea", lambda ls: ["00002_lr 12 0 1000"] + ls[1:])
    return "sampling frequency must be positive"


def _not_wfdb(p: Path) -> str:
    (p / "records100/00000/00002_lr.hea").write_text("<html>this is not a header</html>\n")
    return "not a WFDB header"


def _header_escapes(p: Path) -> str:
    shutil.copy(p / "records100/00000/00003_lr.dat", p.parent / "outside.dat")
    _edit_header(p / "records100/00000/00002_lr.hea",
                 lambda ls: [ls[0]] + [line.replace("00002_lr.dat", "../../../outside.dat") for line in ls[1:]])
    return "leaves the record's folder"


def _csv_escapes(p: Path) -> str:
    (p.parent / "outside").mkdir()
    for ext in (".hea", ".dat"):
        shutil.copy(p / f"records100/00000/00003_lr{ext}", p.parent / "outside" / f"00002_lr{ext}")
    db = pd.read_csv(p / "ptbxl_database.csv")
    db.loc[db.ecg_id == 2, "filename_lr"] = "../outside/00002_lr"
    db.to_csv(p / "ptbxl_database.csv", index=False)
    return "is not a path inside"


def _bad_scp_codes(p: Path) -> str:
    db = pd.read_csv(p / "ptbxl_database.csv")
    db.loc[db.ecg_id == 2, "scp_codes"] = "{'NORM': 100.0, 'SR'"
    db.to_csv(p / "ptbxl_database.csv", index=False)
    return "unparseable scp_codes"


def _bad_age(p: Path) -> str:
    db = pd.read_csv(p / "ptbxl_database.csv")
    db["age"] = db["age"].astype(object)
    db.loc[db.ecg_id == 2, "age"] = "about fifty"
    db.to_csv(p / "ptbxl_database.csv", index=False)
    return "non-numeric age 'about fifty'"


@pytest.mark.parametrize(
    "damage",
    [_truncate, _lead_count, _nan_samples, _missing_signal, _missing_header, _unknown_lead, _duplicate_lead, _zero_fs,
     _not_wfdb, _header_escapes, _csv_escapes, _bad_scp_codes, _bad_age],
)
def test_damaged_ptbxl_record_is_quarantined(ptbxl_root, tmp_path, damage):
    root = _mini_ptbxl(ptbxl_root, tmp_path / "src")
    reason = damage(root)
    out = tmp_path / "out"
    manifest = ingest("ptbxl", root, out, workers=1, progress=False)
    assert manifest.n_records == 5
    (entry,) = manifest.quarantine
    assert entry["record"] == "00002" and reason in entry["reason"]
    assert "00002" in entry["path"] or "ecg_id 2" in entry["path"]
    _, df = _table(out)
    assert list(df.record_id) == ["00001", "00003", "00004", "00005", "00006"]
    _no_leftovers(out)


def _mini_cinc(cinc_root: Path, root: Path) -> Path:
    root.mkdir(parents=True)
    for name in ("A0001", "A0002", "Q0012", "JS45551"):
        for path in cinc_root.rglob(f"{name}.*"):
            shutil.copy(path, root)
    return root


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda ls: [line if not line.startswith("#Dx") else "#Dx: 59118001;AF" for line in ls], "malformed #Dx"),
        (lambda ls: [line if not line.startswith("#Age") else "#Age: old" for line in ls], "non-numeric age 'old'"),
        (lambda ls: [ls[0].replace(" 12 ", " 11 ")] + ls[1:12] + ls[13:], "holds 12 leads but the header declares 11"),
        (lambda ls: [ls[0].replace("7500", "7000")] + ls[1:], "longer than declared"),
    ],
)
def test_damaged_cinc_record_is_quarantined(cinc_root, tmp_path, edit, reason):
    root = _mini_cinc(cinc_root, tmp_path / "src")
    _edit_header(root / "A0001.hea", edit)
    manifest = ingest("cinc", root, tmp_path / "out", workers=1, progress=False)
    assert manifest.n_records == 3
    (entry,) = manifest.quarantine
    assert entry["record"] == "A0001" and reason in entry["reason"] and entry["path"].startswith(str(root / "A0001"))


def test_record_missing_a_lead_is_quarantined(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "src").mkdir()
    for name, leads in (("full", list(DEFAULT_ORDER)), ("eleven", list(DEFAULT_ORDER[:-1]))):
        wfdb.wrsamp(name, fs=500, units=["mV"] * len(leads), sig_name=leads, p_signal=rng.normal(0, 0.3, (1000, len(leads))),
                    fmt=["16"] * len(leads), write_dir=str(tmp_path / "src"))
    manifest = ingest("wfdb", tmp_path / "src", tmp_path / "out", workers=1, progress=False)
    assert manifest.n_records == 1 and manifest.quarantine[0]["reason"].startswith("missing lead(s) V6")
    # Asking only for the leads it has makes it usable.
    manifest = ingest("wfdb", tmp_path / "src", tmp_path / "out2", lead_order=["I", "II"], workers=1, progress=False)
    assert manifest.n_records == 2 and manifest.lead_names == ["I", "II"]


def test_whole_dataset_problems_are_dataset_errors(ptbxl_root, tmp_path):
    with pytest.raises(DatasetError, match="no CinC headers"):
        ingest("cinc", tmp_path, tmp_path / "out", progress=False)
    root = _mini_ptbxl(ptbxl_root, tmp_path / "src", n=2)
    pd.read_csv(root / "ptbxl_database.csv").drop(columns=["scp_codes", "patient_id"]).to_csv(
        root / "ptbxl_database.csv", index=False)
    with pytest.raises(DatasetError, match=r"ptbxl_database.csv: missing column\(s\) patient_id, scp_codes"):
        ingest("ptbxl", root, tmp_path / "out", progress=False)
    (root / "scp_statements.csv").unlink()
    with pytest.raises(DatasetError, match="scp_statements.csv: PTB-XL statement table is missing"):
        ingest("ptbxl", root, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_all_records_bad_is_a_dataset_error(ptbxl_root, tmp_path):
    root = _mini_ptbxl(ptbxl_root, tmp_path / "src", n=2)
    for dat in root.rglob("*.dat"):
        dat.unlink()
    with pytest.raises(DatasetError, match="none of 2 records could be ingested.*signal file is missing"):
        ingest("ptbxl", root, tmp_path / "out", progress=False)


# ------------------------------------------------------------------------------------------------ resuming


def _stats(out: Path) -> dict[str, tuple[int, int, str]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted((out / "shards").glob("*.parquet"))}


@pytest.fixture(scope="module")
def clean_run(ptbxl_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    ingest("ptbxl", ptbxl_root, out, records_per_shard=100, workers=1, progress=False)
    return out


def test_parallel_run_writes_identical_shards(ptbxl_root, clean_run, tmp_path):
    ingest("ptbxl", ptbxl_root, tmp_path, records_per_shard=100, workers=2, progress=False)
    assert {k: v[2] for k, v in _stats(tmp_path).items()} == {k: v[2] for k, v in _stats(clean_run).items()}
    assert len(_stats(tmp_path)) == 5


def test_rerun_without_manifest_rewrites_nothing(ptbxl_root, clean_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(clean_run, out)
    before = _stats(out)
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").unlink()
    again = ingest("ptbxl", ptbxl_root, out, records_per_shard=100, workers=1, progress=False)
    assert _stats(out) == before  # same inode, mtime and bytes: nothing rewritten
    assert {**again.to_dict(), "created": None} == {**manifest, "created": None}


def test_corrupt_shard_is_rewritten(ptbxl_root, clean_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(clean_run, out)
    before = _stats(out)
    victim = out / "shards" / "shard-00002.parquet"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    ingest("ptbxl", ptbxl_root, out, records_per_shard=100, workers=1, progress=False)
    after = _stats(out)
    assert after["shard-00002.parquet"][2] == before["shard-00002.parquet"][2]  # restored
    assert {k: v for k, v in after.items() if k != "shard-00002.parquet"} == {
        k: v for k, v in before.items() if k != "shard-00002.parquet"}


def test_killed_ingest_resumes(ptbxl_root, clean_run, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real_piece, real_shard = ingest_module.run_piece, ingest_module.run_shard

    def dies_reading_shard_3(task):
        if task.shard == 3:
            raise KeyboardInterrupt  # what a Ctrl-C or kill looks like from inside
        return real_piece(task)

    monkeypatch.setattr(ingest_module, "run_piece", dies_reading_shard_3)
    with pytest.raises(KeyboardInterrupt):
        ingest("ptbxl", ptbxl_root, out, records_per_shard=100, workers=1, progress=False)
    journal = out / ".ingest"
    pieces = {p.name: p.stat().st_mtime_ns for p in journal.glob("piece-*.json")}
    assert sorted(pieces) == [f"piece-0000{k}-000.json" for k in range(3)]
    # A shard whose rows have their folds is written as soon as its pieces are read.
    first = _stats(out)
    assert sorted(first) == [f"shard-0000{k}.parquet" for k in range(3)]

    def dies_writing_shard_4(task):
        if task.shard == 4:
            raise KeyboardInterrupt
        return real_shard(task)

    monkeypatch.setattr(ingest_module, "run_piece", real_piece)
    monkeypatch.setattr(ingest_module, "run_shard", dies_writing_shard_4)
    with pytest.raises(KeyboardInterrupt):
        ingest("ptbxl", ptbxl_root, out, records_per_shard=100, workers=1, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in journal.glob("piece-*.json") if p.name in pieces} == pieces
    written = _stats(out)
    assert sorted(written) == [f"shard-0000{k}.parquet" for k in range(4)]
    assert {k: written[k] for k in first} == first
    assert not (out / "manifest.json").exists()

    monkeypatch.setattr(ingest_module, "run_shard", real_shard)
    ingest("ptbxl", ptbxl_root, out, records_per_shard=100, workers=1, progress=False)
    final = _stats(out)
    assert {k: final[k] for k in written} == written  # finished shards untouched
    assert {k: v[2] for k, v in final.items()} == {k: v[2] for k, v in _stats(clean_run).items()}
    _no_leftovers(out)


class LateLabelSetSource:
    """Nine in-memory records with source folds; only the last three carry a second label set."""

    name = "late-labels"
    default_label_set = "all"

    def list_records(self, root: Path) -> list:
        from ecg_tune.data.sources import RecordRef

        return [RecordRef(f"r{i}", f"mem://{i}", {"i": i}) for i in range(9)]

    def read(self, ref) -> RawRecord:
        i = ref.meta["i"]
        labels = {"all": [f"c{i % 2}"], **({"late": ["x"]} if i >= 6 else {})}
        signal = np.random.default_rng(i).normal(0, 0.5, (12, 300))
        return RawRecord(ref.record_id, self.name, 100.0, signal, list(DEFAULT_ORDER), labels=labels,
                         fold=i % 10 + 1, path=ref.path)

    def version(self, root: Path) -> str:
        return "1"

    def origin_id(self, record: RawRecord) -> str:
        return f"late:{record.record_id}"


def test_a_shard_written_before_a_new_label_set_appeared_is_rewritten(tmp_path, monkeypatch):
    from ecg_tune.data.sources import SOURCES

    monkeypatch.setitem(SOURCES._entries, "late-labels", f"{__name__}:LateLabelSetSource")
    written = []
    real_shard = ingest_module.run_shard
    monkeypatch.setattr(ingest_module, "run_shard", lambda task: written.append((task.shard, task.label_sets)) or real_shard(task))
    manifest = ingest("late-labels", tmp_path, tmp_path / "out", records_per_shard=3, workers=1, progress=False)
    # Shards 0 and 1 went out as soon as they were read, with the label sets seen so far; the last one
    # brought "late", so they were read and written again with it.
    assert written == [(0, ["all"]), (1, ["all"]), (2, ["all", "late"]), (0, ["all", "late"]), (1, ["all", "late"])]
    assert sorted(manifest.label_sets) == ["all", "late"]
    for entry in manifest.shards:
        assert "label_late" in pq.read_schema(tmp_path / "out" / entry["file"]).names
    _, df = _table(tmp_path / "out")
    assert [list(v) for v in df.label_late] == [[]] * 6 + [["x"]] * 3
    assert list(df.fold) == [i % 10 + 1 for i in range(9)]
    assert not list((tmp_path / "out" / ".ingest").glob("piece-*.bin"))
    _no_leftovers(tmp_path / "out")


def test_changed_settings_start_over(ptbxl_root, tmp_path):
    root = _mini_ptbxl(ptbxl_root, tmp_path / "src", n=4)
    ingest("ptbxl", root, tmp_path / "out", records_per_shard=2, workers=1, progress=False)
    assert len(list((tmp_path / "out" / "shards").iterdir())) == 2
    manifest = ingest("ptbxl", root, tmp_path / "out", records_per_shard=4, fs=50, workers=1, progress=False)
    assert [p.name for p in (tmp_path / "out" / "shards").iterdir()] == ["shard-00000.parquet"]
    assert manifest.fs == 50.0 and manifest.n_records == 4
    _, df = _table(tmp_path / "out")
    assert set(df.n_samples) == {500}


# ------------------------------------------------------------------------------------------------ write_dataset


def _record(i: int, fs: float = 100.0, n: int = 500, fold: int | None = None, **kw) -> RawRecord:
    rng = np.random.default_rng(i)
    signal = kw.pop("signal", rng.normal(0, 0.5, (12, n)))
    return RawRecord(f"syn-{i:03d}", "synthetic", fs, signal, list(DEFAULT_ORDER), labels={"all": [f"c{i % 3}"]},
                     fold=fold, path=f"mem://{i}", **kw)


def test_write_dataset_in_order_with_folds(tmp_path):
    given = {0: 1, 1: 1, 2: 2, 3: 2, 4: 3}  # records 0-4 come with folds (patients p0, p0, p1, p1, p2)
    records = [_record(i, fold=given.get(i), patient_id=f"p{i // 2}") for i in range(23)]
    manifest = write_dataset(iter(records), tmp_path, source="synthetic", source_version="1", fs=100, records_per_shard=10)
    _, df = _table(tmp_path)
    assert [s["rows"] for s in manifest.shards] == [10, 10, 3]
    assert list(df.record_id) == [r.record_id for r in records]
    assert list(df.fold[:6]) == [1, 1, 2, 2, 3, 3]  # given folds are kept; p2's other record joins them
    assert set(df.fold) <= set(range(1, 11)) and df.groupby("patient_id").fold.nunique().max() == 1
    assert list(df.origin_id[:2]) == ["synthetic:syn-000", "synthetic:syn-001"]
    np.testing.assert_array_equal(decode_signal(df.signal[7], 12), np.rint(records[7].signal.T * 1000))
    assert manifest.default_label_set == "all" and manifest.source_version == "1"


def test_write_dataset_resamples_counts_and_quarantines(tmp_path):
    loud = np.zeros((12, 400))
    loud[0, :10] = 40.0  # 40 mV: beyond int16 at 1 µV, saturates
    nan = np.ones((12, 400))
    nan[3, 7] = np.nan
    records = [_record(0, fs=500, n=2000), _record(1, signal=loud), _record(2, signal=nan), _record(1)]
    manifest = write_dataset(records, tmp_path, source="synthetic", source_version="1", fs=100)
    assert manifest.n_records == 2 and manifest.clipped_samples == 10
    assert manifest.flat_leads == 11  # leads 1-11 of the loud record are all zero
    reasons = {q["reason"] for q in manifest.quarantine}
    assert reasons == {"NaN or infinite samples in lead(s) aVR", "duplicate record id 'syn-001'"}
    _, df = _table(tmp_path)
    assert list(df.n_samples) == [400, 400] and decode_signal(df.signal[1], 12)[:10, 0].tolist() == [32767] * 10


def test_progress_bar_goes_to_stderr(ptbxl_root, tmp_path, capsys):
    root = _mini_ptbxl(ptbxl_root, tmp_path / "src", n=2)
    ingest("ptbxl", root, tmp_path / "out", workers=1, progress=True)
    captured = capsys.readouterr()
    assert "reading ptbxl" in captured.err and captured.out == ""


# ------------------------------------------------------------------------------------------------ other layouts


def test_code_and_chapman_layouts_ingest(tmp_path):
    import h5py

    rng = np.random.default_rng(5)
    code = tmp_path / "code"
    code.mkdir()
    tracings = np.zeros((4, 4096, 12), dtype=np.float32)
    for i, n in enumerate((4000, 2800, 4000, 2800)):
        pad = (4096 - n) // 2
        tracings[i, pad : pad + n] = rng.normal(0, 0.3, (n, 12))
    with h5py.File(code / "ecg_tracings.hdf5", "w") as f:
        f.create_dataset("tracings", data=tracings)
    pd.DataFrame({"age": [30, 40, 50, 60], "sex": ["M", "F", "M", "F"]}).to_csv(code / "attributes.csv", index=False)
    manifest = ingest("code15", code, tmp_path / "code_out", workers=1, progress=False)
    _, df = _table(tmp_path / "code_out")
    assert list(df.n_samples) == [1000, 700, 1000, 700] and manifest.n_records == 4  # 400 Hz → 100 Hz, padding gone
    assert list(df.record_id) == ["test-00000", "test-00001", "test-00002", "test-00003"]

    chapman = tmp_path / "chapman"
    (chapman / "ECGData").mkdir(parents=True)
    for i in range(3):
        pd.DataFrame(rng.normal(0, 200, (5000, 12)), columns=list(DEFAULT_ORDER)).to_csv(
            chapman / "ECGData" / f"MUSE_{i}.csv", index=False)
    pd.DataFrame({"FileName": ["MUSE_0", "MUSE_1", "MUSE_2", "MUSE_9"], "Rhythm": ["SB", "SR", "AFIB", "SR"],
                  "Beat": ["NONE"] * 4, "PatientAge": [1, 2, 3, 4], "Gender": ["MALE"] * 4}).to_csv(
        chapman / "Diagnostics.csv", index=False)
    manifest = ingest("chapman", chapman, tmp_path / "chapman_out", workers=1, progress=False)
    assert manifest.n_records == 3 and manifest.quarantine[0]["record"] == "MUSE_9"  # listed, but no CSV
    _, df = _table(tmp_path / "chapman_out")
    assert set(df.n_samples) == {1000} and [list(x) for x in df.label_rhythm] == [["SB"], ["SR"], ["AFIB"]]
