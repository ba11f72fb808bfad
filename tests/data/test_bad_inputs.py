"""The bad-input corpus: every kind of damaged source file, generated on the fly from the real samples.

Each case copies a few real records (PTB-XL, CinC, or PTB-XL 500 Hz records rewritten in the Chapman
CSV layout) into tmp_path, damages one thing, and ingests. A damaged record must end up in the
quarantine with a reason that names the problem and a path that names the file, while every good
record still ingests; a problem with the whole dataset must be one `DatasetError` naming the file, and
through `ecg-tune prepare` one line on stderr and exit status 2. Nothing is ever written into the
repository or the shared samples.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ecg_tune.data import ingest
from ecg_tune.data.sources.wfdb import parse_header, read_wfdb_record
from ecg_tune.errors import DatasetError

PTBXL_N = 4  # records 1-4 of the sample; record 2 is the one damaged
CINC_RECORDS = ("A0001", "A0002", "Q0012", "JS45551")  # A0001 is the one damaged
CHAPMAN_N = 3  # MUSE_0..MUSE_2 from PTB-XL records 1-3 at 500 Hz; MUSE_1 is the one damaged


# ------------------------------------------------------------------------------------------------ corpora


def make_ptbxl(sample: Path, root: Path) -> Path:
    folder = root / "records100" / "00000"
    folder.mkdir(parents=True)
    for i in range(1, PTBXL_N + 1):
        for ext in (".hea", ".dat"):
            shutil.copy(sample / "records100" / "00000" / f"{i:05d}_lr{ext}", folder)
    shutil.copy(sample / "scp_statements.csv", root)
    db = pd.read_csv(sample / "ptbxl_database.csv")
    db[db.ecg_id <= PTBXL_N].to_csv(root / "ptbxl_database.csv", index=False)
    return root


def make_cinc(sample: Path, root: Path) -> Path:
    root.mkdir(parents=True)
    for name in CINC_RECORDS:
        for path in sample.rglob(f"{name}.*"):
            shutil.copy(path, root)
    return root


def make_chapman(ptbxl_sample: Path, root: Path) -> Path:
    """The Chapman layout (ECGData/<FileName>.csv in µV at 500 Hz + Diagnostics.csv) from real records."""
    (root / "ECGData").mkdir(parents=True)
    names = []
    for i in range(CHAPMAN_N):
        hea = ptbxl_sample / "records500" / "00000" / f"{i + 1:05d}_hr.hea"
        record, _ = read_wfdb_record(hea, str(i), "ptbxl")
        names.append(f"MUSE_{i}")
        frame = pd.DataFrame(np.rint(record.signal.T * 1000.0), columns=record.lead_names)
        frame.to_csv(root / "ECGData" / f"MUSE_{i}.csv", index=False, float_format="%.0f")
    pd.DataFrame({"FileName": names, "Rhythm": ["SR", "SB", "AFIB"], "Beat": ["NONE"] * CHAPMAN_N,
                  "PatientAge": [50, 60, 70], "Gender": ["MALE", "FEMALE", "MALE"]}).to_csv(
        root / "Diagnostics.csv", index=False)
    return root


# ------------------------------------------------------------------------------------------------ damage


def _edit_lines(path: Path, edit: Callable[[list[str]], list[str]]) -> None:
    path.write_text("\n".join(edit(path.read_text().splitlines())) + "\n")


def _edit_db(root: Path, column: str, value: object, ecg_id: int = 2) -> None:
    db = pd.read_csv(root / "ptbxl_database.csv")
    db[column] = db[column].astype(object)
    db.loc[db.ecg_id == ecg_id, column] = value
    db.to_csv(root / "ptbxl_database.csv", index=False)


def _edit_samples(path: Path, n_leads: int, edit: Callable[[np.ndarray], None], offset: int = 0) -> None:
    raw = path.read_bytes()
    data = np.frombuffer(raw[offset:], dtype="<i2").reshape(-1, n_leads).copy()
    edit(data)
    path.write_bytes(raw[:offset] + data.tobytes())


P2 = "records100/00000/00002_lr"  # the damaged PTB-XL record, without suffix


def truncated_dat(r: Path) -> None:
    dat = r / f"{P2}.dat"
    dat.write_bytes(dat.read_bytes()[: -24 * 10])  # ten frames short


def odd_sized_dat(r: Path) -> None:
    dat = r / f"{P2}.dat"
    dat.write_bytes(dat.read_bytes()[:-7])


def fewer_leads_in_header(r: Path) -> None:
    _edit_lines(r / f"{P2}.hea", lambda ls: [ls[0].replace(" 12 ", " 11 ")] + ls[1:12])


def shorter_length_in_header(r: Path) -> None:
    _edit_lines(r / f"{P2}.hea", lambda ls: [ls[0].replace(" 1000", " 900")] + ls[1:])


def longer_length_in_header(r: Path) -> None:
    _edit_lines(r / f"{P2}.hea", lambda ls: [ls[0].replace(" 1000", " 1100")] + ls[1:])


def zero_fs(r: Path) -> None:
    _edit_lines(r / f"{P2}.hea", lambda ls: ["00002_lr 12 0 1000"] + ls[1:])


def negative_fs(r: Path) -> None:
    _edit_lines(r / f"{P2}.hea", lambda ls: ["00002_lr 12 -100 1000"] + ls[1:])


def nan_fs(r: Path) -> None:
    _edit_lines(r / f"{P2}.hea", lambda ls: ["00002_lr 12 nan 1000"] + ls[1:])


def nan_samples(r: Path) -> None:
    def edit(d: np.ndarray) -> None:
        d[10, 1] = -32768  # WFDB's "no sample" marker (read as NaN by wfdb) in lead II

    _edit_samples(r / f"{P2}.dat", 12, edit)


def flat_lead(r: Path) -> None:
    def edit(d: np.ndarray) -> None:
        d[:, 8] = 17  # V3: constant, e.g. an electrode that fell off

    _edit_samples(r / f"{P2}.dat", 12, edit)


def all_leads_flat(r: Path) -> None:
    _edit_samples(r / f"{P2}.dat", 12, lambda d: d.fill(0))


def duplicated_lead(r: Path) -> None:
    _edit_lines(r / f"{P2}.hea", lambda ls: ls[:-1] + [ls[-1].replace(" V6", " V5")])


def unknown_lead(r: Path) -> None:
    _edit_lines(r / f"{P2}.hea", lambda ls: ls[:-1] + [ls[-1].replace(" V6", " V7")])


def non_voltage_units(r: Path) -> None:
    _edit_lines(r / f"{P2}.hea", lambda ls: [ls[0], ls[1].replace("/mV", "/degC")] + ls[2:])


def html_header(r: Path) -> None:
    (r / f"{P2}.hea").write_text("<html><body>404 Not Found</body></html>\n")


def binary_header(r: Path) -> None:
    (r / f"{P2}.hea").write_bytes(np.random.default_rng(0).bytes(400))


def empty_header(r: Path) -> None:
    (r / f"{P2}.hea").write_bytes(b"")


def missing_header(r: Path) -> None:
    (r / f"{P2}.hea").unlink()


def missing_dat(r: Path) -> None:
    (r / f"{P2}.dat").unlink()


def header_signal_file_escapes(r: Path) -> None:
    shutil.copy(r / "records100/00000/00003_lr.dat", r.parent / "outside.dat")
    _edit_lines(r / f"{P2}.hea", lambda ls: [ls[0]] + [x.replace("00002_lr.dat", "../../../outside.dat") for x in ls[1:]])


def header_signal_file_absolute(r: Path) -> None:
    _edit_lines(r / f"{P2}.hea", lambda ls: [ls[0]] + [x.replace("00002_lr.dat", "/etc/passwd") for x in ls[1:]])


def csv_filename_escapes(r: Path) -> None:
    (r.parent / "outside").mkdir()
    for ext in (".hea", ".dat"):  # a readable record waits outside the root: it must not be read
        shutil.copy(r / f"records100/00000/00003_lr{ext}", r.parent / "outside" / f"00002_lr{ext}")
    _edit_db(r, "filename_lr", "../outside/00002_lr")


def csv_filename_escapes_midway(r: Path) -> None:
    _edit_db(r, "filename_lr", "records100/../../outside/00002_lr")


def csv_filename_absolute(r: Path) -> None:
    _edit_db(r, "filename_lr", str((r / P2).resolve()))


def scp_codes_syntax(r: Path) -> None:
    _edit_db(r, "scp_codes", "{'NORM': 100.0, 'SR'")


def scp_codes_not_a_dict(r: Path) -> None:
    _edit_db(r, "scp_codes", "['NORM', 'SR']")


def scp_codes_code(r: Path) -> None:
    _edit_db(r, "scp_codes", f"__import__('os').system('touch {r.parent / 'pwned'}')")


def scp_codes_empty(r: Path) -> None:
    _edit_db(r, "scp_codes", "")


def age_words(r: Path) -> None:
    _edit_db(r, "age", "about fifty")


def patient_id_words(r: Path) -> None:
    _edit_db(r, "patient_id", "unknown patient")


def fold_out_of_range(r: Path) -> None:
    _edit_db(r, "strat_fold", 11)


def duplicate_ecg_id(r: Path) -> None:
    _edit_db(r, "ecg_id", 3)  # row 2 now claims ecg_id 3 as well


C1 = "A0001"


def cinc_missing_mat(r: Path) -> None:
    (r / f"{C1}.mat").unlink()


def cinc_truncated_mat(r: Path) -> None:
    mat = r / f"{C1}.mat"
    mat.write_bytes(mat.read_bytes()[: -24 * 100])


def cinc_garbage_mat(r: Path) -> None:
    (r / f"{C1}.mat").write_bytes(np.random.default_rng(1).bytes(5000))


def cinc_malformed_dx(r: Path) -> None:
    _edit_lines(r / f"{C1}.hea", lambda ls: [x if not x.startswith("#Dx") else "#Dx: 59118001;AF" for x in ls])


def cinc_words_dx(r: Path) -> None:
    _edit_lines(r / f"{C1}.hea", lambda ls: [x if not x.startswith("#Dx") else "#Dx: atrial fibrillation" for x in ls])


def cinc_empty_dx(r: Path) -> None:
    _edit_lines(r / f"{C1}.hea", lambda ls: [x if not x.startswith("#Dx") else "#Dx:" for x in ls])


def cinc_age_words(r: Path) -> None:
    _edit_lines(r / f"{C1}.hea", lambda ls: [x if not x.startswith("#Age") else "#Age: old" for x in ls])


def cinc_fewer_leads_in_header(r: Path) -> None:
    _edit_lines(r / f"{C1}.hea", lambda ls: [ls[0].replace(" 12 ", " 11 ")] + ls[1:12] + ls[13:])


def cinc_shorter_length_in_header(r: Path) -> None:
    _edit_lines(r / f"{C1}.hea", lambda ls: [ls[0].replace(" 7500 ", " 7000 ")] + ls[1:])


def cinc_duplicate_name(r: Path) -> None:
    (r / "copy").mkdir()
    for ext in (".hea", ".mat"):
        shutil.copy(r / f"{C1}{ext}", r / "copy")


M1 = "ECGData/MUSE_1.csv"


def _edit_chapman_csv(r: Path, row: int, lead: str, text: str) -> None:
    lines = (r / M1).read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[row + 1].split(",")
    cells[header.index(lead)] = text
    lines[row + 1] = ",".join(cells)
    (r / M1).write_text("\n".join(lines) + "\n")


def chapman_nan(r: Path) -> None:
    _edit_chapman_csv(r, 100, "II", "nan")


def chapman_inf(r: Path) -> None:
    _edit_chapman_csv(r, 100, "V4", "inf")


def chapman_minus_inf(r: Path) -> None:
    _edit_chapman_csv(r, 4000, "aVL", "-inf")


def chapman_words(r: Path) -> None:
    _edit_chapman_csv(r, 7, "I", "lead-off")


def chapman_flat(r: Path) -> None:
    frame = pd.read_csv(r / M1)
    frame["V1"] = 0
    frame.to_csv(r / M1, index=False)


def chapman_filename_escapes(r: Path) -> None:
    db = pd.read_csv(r / "Diagnostics.csv")
    shutil.copy(r / M1, r.parent / "MUSE_1.csv")
    db.loc[db.FileName == "MUSE_1", "FileName"] = "../../MUSE_1"
    db.to_csv(r / "Diagnostics.csv", index=False)


# Whole-dataset problems


def empty_folder(r: Path) -> None:
    shutil.rmtree(r)
    r.mkdir()


def no_folder(r: Path) -> None:
    shutil.rmtree(r)


def db_missing_columns(r: Path) -> None:
    pd.read_csv(r / "ptbxl_database.csv").drop(columns=["scp_codes", "patient_id"]).to_csv(
        r / "ptbxl_database.csv", index=False)


def db_binary(r: Path) -> None:
    (r / "ptbxl_database.csv").write_bytes(b"\x00\xff\xfe\x01 not a table \x80\x81\n\x02,\x03\n")


def db_empty_file(r: Path) -> None:
    (r / "ptbxl_database.csv").write_bytes(b"")


def db_no_rows(r: Path) -> None:
    pd.read_csv(r / "ptbxl_database.csv").iloc[:0].to_csv(r / "ptbxl_database.csv", index=False)


def statements_missing(r: Path) -> None:
    (r / "scp_statements.csv").unlink()


def statements_missing_columns(r: Path) -> None:
    (r / "scp_statements.csv").write_text("code,description\nNORM,normal\n")


def every_record_bad(r: Path) -> None:
    for dat in r.rglob("*.dat"):
        dat.unlink()


def cinc_only_non_wfdb_headers(r: Path) -> None:
    for hea in r.glob("*.hea"):
        hea.write_text("this is not a WFDB header\n")


def chapman_diagnostics_missing_columns(r: Path) -> None:
    pd.read_csv(r / "Diagnostics.csv").drop(columns=["Rhythm"]).to_csv(r / "Diagnostics.csv", index=False)


# ------------------------------------------------------------------------------------------------ cases


@dataclass(frozen=True)
class Case:
    source: str  # ptbxl | cinc | chapman
    damage: Callable[[Path], None]
    reason: str  # a part of the quarantine reason / error message
    path: str = ""  # a part of the quarantine entry's path naming the file (record cases)
    outcome: str = "quarantine"  # quarantine | note (kept, named in manifest notes) | dataset (DatasetError)
    first_copy_kept: bool = False  # a duplicate: the first copy ingests, the second is quarantined
    record: str = ""  # the quarantined record id, when it is not the source's usual victim

    @property
    def id(self) -> str:
        return self.damage.__name__


PTBXL_DB2 = "ptbxl_database.csv (ecg_id 2)"

CASES = [
    # PTB-XL: WFDB header + format-16 .dat, index CSV
    Case("ptbxl", truncated_dat, "signal file is truncated: 990 samples per lead, header says 1000", "00002_lr.dat"),
    Case("ptbxl", odd_sized_dat, "signal file size does not fit 12 leads", "00002_lr.dat"),
    Case("ptbxl", fewer_leads_in_header, "signal file size does not fit 11 leads", "00002_lr.dat"),
    Case("ptbxl", shorter_length_in_header, "longer than declared: 1000 samples per lead, header says 900", "00002_lr.dat"),
    Case("ptbxl", longer_length_in_header, "truncated: 1000 samples per lead, header says 1100", "00002_lr.dat"),
    Case("ptbxl", zero_fs, "sampling frequency must be positive, header says 0", "00002_lr.hea"),
    Case("ptbxl", negative_fs, "sampling frequency must be positive, header says -100", "00002_lr.hea"),
    Case("ptbxl", nan_fs, "sampling frequency must be positive, header says nan", "00002_lr.hea"),
    Case("ptbxl", nan_samples, "missing samples (NaN) in lead(s) II", "00002_lr.hea"),
    Case("ptbxl", flat_lead, "flat (constant) lead(s) V3", "00002_lr.hea", outcome="note"),
    Case("ptbxl", all_leads_flat, "every lead is flat", "00002_lr.hea"),
    Case("ptbxl", duplicated_lead, "lead V5 appears twice", "00002_lr.hea"),
    Case("ptbxl", unknown_lead, "unknown lead name 'V7'", "00002_lr.hea"),
    Case("ptbxl", non_voltage_units, "has units 'degC', not a voltage", "00002_lr.hea"),
    Case("ptbxl", html_header, "not a WFDB header", "00002_lr.hea"),
    Case("ptbxl", binary_header, "not a WFDB header", "00002_lr.hea"),
    Case("ptbxl", empty_header, "not a WFDB header: no record line", "00002_lr.hea"),
    Case("ptbxl", missing_header, "header file is missing", "00002_lr.hea"),
    Case("ptbxl", missing_dat, "signal file is missing", "00002_lr.dat"),
    Case("ptbxl", header_signal_file_escapes, "'../../../outside.dat' leaves the record's folder", "00002_lr.hea"),
    Case("ptbxl", header_signal_file_absolute, "'/etc/passwd' leaves the record's folder", "00002_lr.hea"),
    Case("ptbxl", csv_filename_escapes, "filename_lr '../outside/00002_lr' is not a path inside", PTBXL_DB2),
    Case("ptbxl", csv_filename_escapes_midway, "is not a path inside", PTBXL_DB2),
    Case("ptbxl", csv_filename_absolute, "is not a path inside", PTBXL_DB2),
    Case("ptbxl", scp_codes_syntax, "unparseable scp_codes", PTBXL_DB2),
    Case("ptbxl", scp_codes_not_a_dict, "unparseable scp_codes: scp_codes is not a dict", PTBXL_DB2),
    Case("ptbxl", scp_codes_code, "unparseable scp_codes", PTBXL_DB2),
    Case("ptbxl", scp_codes_empty, "unparseable scp_codes: scp_codes is empty", PTBXL_DB2),
    Case("ptbxl", age_words, "non-numeric age 'about fifty'", PTBXL_DB2),
    Case("ptbxl", patient_id_words, "patient_id 'unknown patient' is not a number", PTBXL_DB2),
    Case("ptbxl", fold_out_of_range, "strat_fold 11 is not 1-10", PTBXL_DB2),
    # CinC: WFDB header with #Dx/#Age comments + MATLAB v4 .mat
    Case("cinc", cinc_missing_mat, "signal file is missing", "A0001.mat"),
    Case("cinc", cinc_truncated_mat, "signal file is truncated: 7400 samples per lead, header says 7500", "A0001.mat"),
    Case("cinc", cinc_garbage_mat, "MATLAB v4 matrix is not little-endian int16", "A0001.mat"),
    Case("cinc", cinc_malformed_dx, "malformed #Dx line 'Dx: 59118001;AF'", "A0001.hea"),
    Case("cinc", cinc_words_dx, "malformed #Dx line", "A0001.hea"),
    Case("cinc", cinc_empty_dx, "malformed #Dx line", "A0001.hea"),
    Case("cinc", cinc_age_words, "non-numeric age 'old'", "A0001.hea"),
    Case("cinc", cinc_fewer_leads_in_header, "holds 12 leads but the header declares 11", "A0001.mat"),
    Case("cinc", cinc_shorter_length_in_header, "longer than declared: 7500 samples per lead, header says 7000", "A0001.mat"),
    Case("cinc", cinc_duplicate_name, "record name A0001 also at", "copy/A0001.hea", first_copy_kept=True),
    # Chapman layout (CSV samples in µV): the only layout whose files can hold NaN/inf as text
    Case("chapman", chapman_nan, "NaN or infinite samples in lead(s) II", "MUSE_1.csv"),
    Case("chapman", chapman_inf, "NaN or infinite samples in lead(s) V4", "MUSE_1.csv"),
    Case("chapman", chapman_minus_inf, "NaN or infinite samples in lead(s) aVL", "MUSE_1.csv"),
    Case("chapman", chapman_words, "non-numeric samples", "MUSE_1.csv"),
    Case("chapman", chapman_flat, "flat (constant) lead(s) V1", "MUSE_1.csv", outcome="note"),
    Case("chapman", chapman_filename_escapes, "FileName '../../MUSE_1' is not a file name inside", "Diagnostics.csv",
         record="../../MUSE_1"),
    # Whole-dataset problems: one DatasetError naming the file
    Case("ptbxl", empty_folder, "ptbxl_database.csv: PTB-XL index CSV is missing", outcome="dataset"),
    Case("cinc", empty_folder, "no CinC headers (*.hea) found", outcome="dataset"),
    Case("chapman", empty_folder, "Diagnostics.xlsx or Diagnostics.csv) is missing", outcome="dataset"),
    Case("ptbxl", no_folder, "dataset folder does not exist", outcome="dataset"),
    Case("ptbxl", db_missing_columns, "ptbxl_database.csv: missing column(s) patient_id, scp_codes", outcome="dataset"),
    Case("ptbxl", db_binary, "ptbxl_database.csv: PTB-XL index CSV is not a readable CSV", outcome="dataset"),
    Case("ptbxl", db_empty_file, "ptbxl_database.csv: PTB-XL index CSV is not a readable CSV", outcome="dataset"),
    Case("ptbxl", db_no_rows, "no rows in ptbxl_database.csv found", outcome="dataset"),
    Case("ptbxl", statements_missing, "scp_statements.csv: PTB-XL statement table is missing", outcome="dataset"),
    Case("ptbxl", statements_missing_columns, "scp_statements.csv: missing column(s) diagnostic", outcome="dataset"),
    Case("ptbxl", every_record_bad, "none of 4 records could be ingested", outcome="dataset"),
    Case("cinc", cinc_only_non_wfdb_headers, "none of 4 records could be ingested", outcome="dataset"),
    Case("chapman", chapman_diagnostics_missing_columns, "Diagnostics.csv: missing column(s) Rhythm", outcome="dataset"),
]
# (duplicate ecg_id: the second row is quarantined as a duplicate; see test_duplicate_ecg_id below)

ALL_IDS = {"ptbxl": [f"{i:05d}" for i in range(1, PTBXL_N + 1)], "cinc": sorted(CINC_RECORDS),
           "chapman": [f"MUSE_{i}" for i in range(CHAPMAN_N)]}
VICTIM = {"ptbxl": "00002", "cinc": C1, "chapman": "MUSE_1"}


@pytest.fixture
def corpus(tmp_path: Path, ptbxl_root: Path, cinc_root: Path) -> Callable[[str], Path]:
    def build(source: str) -> Path:
        root = tmp_path / "data" / source
        if source == "ptbxl":
            return make_ptbxl(ptbxl_root, root)
        if source == "cinc":
            return make_cinc(cinc_root, root)
        return make_chapman(ptbxl_root, root)

    return build


def _shard_ids(out: Path) -> list[str]:
    manifest = json.loads((out / "manifest.json").read_text())
    return [rid for s in manifest["shards"] for rid in pq.read_table(out / s["file"], columns=["record_id"]).column(0).to_pylist()]


def _no_temp_files(out: Path) -> None:
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")] if out.exists() else True


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.source}-{c.id}")
def test_bad_input(case: Case, corpus: Callable[[str], Path], tmp_path: Path) -> None:
    root = corpus(case.source)
    case.damage(root)
    out = tmp_path / "out"
    if case.outcome == "dataset":
        with pytest.raises(DatasetError) as info:
            ingest(case.source, root, out, workers=1, progress=False)
        assert case.reason in str(info.value)
        assert str(root) in str(info.value), "the error names the file or folder"
        assert not (out / "manifest.json").exists()
        return

    manifest = ingest(case.source, root, out, workers=1, progress=False)
    victim, ids = VICTIM[case.source], ALL_IDS[case.source]
    if case.outcome == "note":  # kept, and named with the problem
        assert manifest.quarantine == [] and _shard_ids(out) == ids
        (note,) = manifest.notes
        assert note["record"] == victim and case.reason in note["note"] and case.path in note["path"]
    else:
        (entry,) = manifest.quarantine
        assert entry["record"] == (case.record or victim), entry
        assert case.reason in entry["reason"], entry
        assert case.path in entry["path"], entry
        kept = ids if case.first_copy_kept else [i for i in ids if i != victim]
        assert _shard_ids(out) == kept and manifest.n_records == len(kept)  # every good record still ingests
    _no_temp_files(out)


def test_no_code_runs_and_nothing_outside_the_root_is_used(corpus: Callable[[str], Path], tmp_path: Path) -> None:
    """scp_codes is parsed as a literal (the code in it never runs), and a valid record waiting outside
    the root behind `../` is not ingested (it would be if the path were followed)."""
    root = corpus("ptbxl")
    scp_codes_code(root)
    ingest("ptbxl", root, tmp_path / "out1", workers=1, progress=False)
    assert not (root.parent / "pwned").exists()

    root2 = tmp_path / "second" / "ptbxl"
    shutil.copytree(root, root2)
    _edit_db(root2, "scp_codes", "{'NORM': 100.0}")
    csv_filename_escapes(root2)
    manifest = ingest("ptbxl", root2, tmp_path / "out2", workers=1, progress=False)
    assert [q["record"] for q in manifest.quarantine] == ["00002"]
    assert "00002" not in _shard_ids(tmp_path / "out2")


def test_duplicate_ecg_id(corpus: Callable[[str], Path], tmp_path: Path) -> None:
    root = corpus("ptbxl")
    duplicate_ecg_id(root)
    manifest = ingest("ptbxl", root, tmp_path / "out", workers=1, progress=False)
    (entry,) = manifest.quarantine
    assert entry["record"] == "00003" and entry["reason"] == "duplicate record id '00003'"
    assert _shard_ids(tmp_path / "out") == ["00001", "00003", "00004"]


def test_flat_lead_note_reaches_inspect(corpus: Callable[[str], Path], tmp_path: Path) -> None:
    from ecg_tune.data.dataset import format_summary, open_dataset

    root = corpus("ptbxl")
    flat_lead(root)
    ingest("ptbxl", root, tmp_path / "out", workers=1, progress=False)
    summary = open_dataset(tmp_path / "out").summary()
    assert summary["flat_leads"] == 1 and summary["notes"]["examples"][0]["record"] == "00002"
    assert "1 record(s) named in manifest.json notes" in format_summary(summary)


def test_every_header_parses_or_fails_cleanly(ptbxl_root: Path, cinc_root: Path) -> None:
    """The real headers all parse (a sanity check that the corpus above starts from good files)."""
    for hea in [*sorted((ptbxl_root / "records100" / "00000").glob("0000[1-4]_lr.hea")), *sorted(cinc_root.rglob("A000[12].hea"))]:
        assert len(parse_header(hea).signals) == 12


# ------------------------------------------------------------------------------------------------ CLI

CLI_CASES = {
    "cinc-empty_folder": ("cinc", empty_folder, "no CinC headers"),
    "ptbxl-db_missing_columns": ("ptbxl", db_missing_columns, "missing column(s) patient_id, scp_codes"),
    "ptbxl-db_binary": ("ptbxl", db_binary, "is not a readable CSV"),
    "ptbxl-every_record_bad": ("ptbxl", every_record_bad, "none of 4 records could be ingested"),
}


def _prepare(source: str, root: Path, out: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run([sys.executable, "-m", "ecg_tune.cli", "prepare", source, str(root), str(out), "--workers", "1"],
                          capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("name", sorted(CLI_CASES))
def test_prepare_cli_whole_dataset_problem_is_one_line_and_exit_2(name: str, corpus: Callable[[str], Path], tmp_path: Path) -> None:
    source, damage, reason = CLI_CASES[name]
    root = corpus(source)
    damage(root)
    done = _prepare(source, root, tmp_path / "out")
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ecg-tune prepare: error: ")]
    assert len(errors) == 1 and reason in errors[0] and str(root) in errors[0], done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_prepare_cli_quarantines_bad_records_and_exits_0(corpus: Callable[[str], Path], tmp_path: Path) -> None:
    root = corpus("cinc")
    cinc_malformed_dx(root)
    done = _prepare("cinc", root, tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert "records   3 in 1 shard(s)" in done.stdout and "quarantine 1 record(s): malformed #Dx line" in done.stdout
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["quarantine"][0]["path"] == str(root / "A0001.hea")
