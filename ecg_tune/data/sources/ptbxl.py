"""PTB-XL: `ptbxl_database.csv` + `scp_statements.csv` + WFDB records in records100/ or records500/.

Label sets follow helme/ecg_ptbxl_benchmarking (`compute_label_aggregations`) and the reference code
(`prepare_data_ptb_xl`): every key of `scp_codes` counts whatever its likelihood value.
- all: every statement (71 in the full database)
- diagnostic / form / rhythm: statements flagged 1 in that column of scp_statements.csv
- subdiagnostic / superdiagnostic: `diagnostic_subclass` / `diagnostic_class` of the diagnostic ones
"""

from __future__ import annotations

import ast
import hashlib
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from ecg_tune.data.record import RawRecord
from ecg_tune.data.sources.base import (
    RecordRef,
    check_root,
    inside,
    no_records,
    parse_age,
    read_ref_error,
    read_table,
    require_file,
)
from ecg_tune.data.sources.wfdb import read_wfdb_record
from ecg_tune.errors import ConfigError, DatasetError, RecordError

DATABASE = "ptbxl_database.csv"
STATEMENTS = "scp_statements.csv"
_DB_COLUMNS = ("ecg_id", "patient_id", "age", "sex", "scp_codes", "strat_fold")
_STATEMENT_COLUMNS = ("diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass")
_WHICH = {"100": "lr", "lr": "lr", "records100": "lr", "500": "hr", "hr": "hr", "records500": "hr"}
_NAN = re.compile(r"\bnan\b")
_EXP = r"(?:[eE][-+]?\d+)"
_NUMBER = rf"[-+]?(?:\d+\.\d*{_EXP}?|\.\d+{_EXP}?|\d+{_EXP}|0+|[1-9]\d*)"  # Python literals
_ITEM = rf"[ \t\n]*'[^'\\\n\r]*'[ \t\n]*:[ \t\n]*(?:{_NUMBER}|nan)[ \t\n]*"
_SIMPLE_CODES = re.compile(rf"\{{(?:{_ITEM}(?:,{_ITEM})*,?[ \t\n]*)?\}}")
_CODE = re.compile(r"'([^']*)'\s*:")


def _missing_columns(df: pd.DataFrame, path: Path, required: tuple[str, ...]) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}")


def parse_scp_codes(text: Any) -> list[str]:
    """The statement keys of one `scp_codes` cell, e.g. "{'NORM': 100.0, 'SR': 0.0}" → ["NORM", "SR"].

    Cells of the published form (quoted codes, numeric or `nan` likelihoods) are read with a regular
    expression; anything else with `ast.literal_eval`, never `eval`: the CSV is data. Bare `nan`
    likelihoods occur in some versions.
    """
    if not isinstance(text, str):
        raise ValueError(f"scp_codes is empty ({text!r})")
    if _SIMPLE_CODES.fullmatch(text):  # 20x faster than literal_eval, the same keys
        return list(dict.fromkeys(_CODE.findall(text)))
    value = ast.literal_eval(_NAN.sub("None", text))
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"scp_codes is not a dict of statement codes: {text!r}")
    return list(value)


class _Statements:
    """The statement → label-set mapping of scp_statements.csv."""

    def __init__(self, path: Path):
        df = read_table(path, "PTB-XL statement table", index_col=0)
        _missing_columns(df, path, _STATEMENT_COLUMNS)
        df.index = df.index.astype(str)

        def flagged(column: str) -> set[str]:
            return set(df.index[pd.to_numeric(df[column], errors="coerce").fillna(0) > 0])

        self.diagnostic = flagged("diagnostic")
        self.form = flagged("form")
        self.rhythm = flagged("rhythm")
        self.subclass = {k: v for k, v in df["diagnostic_subclass"].items() if isinstance(v, str)}
        self.superclass = {k: v for k, v in df["diagnostic_class"].items() if isinstance(v, str)}

    def label_sets(self, codes: list[str]) -> dict[str, list[str]]:
        diagnostic = [c for c in codes if c in self.diagnostic]
        return {
            "all": sorted(set(codes)),
            "diagnostic": sorted(set(diagnostic)),
            "subdiagnostic": sorted({self.subclass[c] for c in diagnostic if c in self.subclass}),
            "superdiagnostic": sorted({self.superclass[c] for c in diagnostic if c in self.superclass}),
            "form": sorted({c for c in codes if c in self.form}),
            "rhythm": sorted({c for c in codes if c in self.rhythm}),
        }


class PtbxlSource:
    name = "ptbxl"
    default_label_set = "all"

    def __init__(self, which: str | int = "lr"):
        key = str(which).lower()
        if key not in _WHICH:
            raise ConfigError("which", f"PTB-XL records are 100 (lr) or 500 (hr), got {which!r}")
        self.which = _WHICH[key]

    def list_records(self, root: Path) -> list[RecordRef]:
        root = check_root(root)
        db_path = require_file(root / DATABASE, "PTB-XL index CSV")
        statements = _Statements(require_file(root / STATEMENTS, "PTB-XL statement table"))
        file_column = f"filename_{self.which}"
        wanted = _DB_COLUMNS + (file_column,)
        db = read_table(db_path, "PTB-XL index CSV", dtype={"scp_codes": str, file_column: str},
                        usecols=lambda c: c in wanted)
        _missing_columns(db, db_path, wanted)
        if db.empty:
            raise no_records(root, f"rows in {DATABASE}")
        columns = {c: db[c].tolist() for c in wanted}  # plain Python values, one pass per column
        return [self._ref(root, db_path, dict(zip(wanted, values)), file_column, statements)
                for values in zip(*columns.values())]

    def _ref(self, root: Path, db_path: Path, row: dict, file_column: str, statements: _Statements) -> RecordRef:
        try:
            ecg_id = int(row["ecg_id"])
        except (TypeError, ValueError):
            raise DatasetError(f"{db_path}: ecg_id {row['ecg_id']!r} is not an integer") from None
        rid = f"{ecg_id:05d}"
        where = f"{db_path} (ecg_id {ecg_id})"
        filename = row[file_column]
        hea = inside(root, f"{filename}.hea") if isinstance(filename, str) else None
        if hea is None:
            return RecordRef(rid, where, error=f"{file_column} {filename!r} is not a path inside {root}")
        meta: dict[str, Any] = {"ecg_id": ecg_id, "db": where}
        try:
            meta["labels"] = statements.label_sets(parse_scp_codes(row["scp_codes"]))
        except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
            return RecordRef(rid, where, meta, error=f"unparseable scp_codes: {e}")
        try:
            meta["fold"] = int(row["strat_fold"])
            if not 1 <= meta["fold"] <= 10:
                raise ValueError
        except (TypeError, ValueError):
            return RecordRef(rid, where, meta, error=f"strat_fold {row['strat_fold']!r} is not 1-10")
        patient = row["patient_id"]
        try:
            meta["patient_id"] = None if _is_missing(patient) else str(int(float(patient)))
        except (TypeError, ValueError, OverflowError):  # "abc", "inf": the patient grouping would be wrong
            return RecordRef(rid, where, meta, error=f"patient_id {patient!r} is not a number")
        meta["age_raw"] = row["age"]
        meta["sex_raw"] = row["sex"]
        return RecordRef(rid, str(hea), meta)

    def read(self, ref: RecordRef) -> RawRecord:
        read_ref_error(ref)
        record, _ = read_wfdb_record(Path(ref.path), ref.record_id, self.name)
        meta = ref.meta
        record.labels = meta["labels"]
        record.fold = meta["fold"]
        record.patient_id = meta["patient_id"]
        record.age = parse_age(meta["age_raw"], meta["db"])
        record.sex = _sex(meta["sex_raw"], meta["db"])
        return record

    def version(self, root: Path) -> str:
        # PTB-XL ships no version file; the index CSVs change with every release.
        h = hashlib.sha256()
        for name in (DATABASE, STATEMENTS):
            h.update(require_file(Path(root) / name, "PTB-XL index CSV").read_bytes())
        return f"{self.which}:sha256:{h.hexdigest()[:16]}"

    def origin_id(self, record: RawRecord) -> str:
        return f"ptbxl:{int(record.record_id)}"


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def _sex(value: Any, where: str) -> str | None:
    # PTB-XL codes sex as 0 = male, 1 = female.
    if _is_missing(value):
        return None
    if str(value).strip() in ("0", "0.0"):
        return "M"
    if str(value).strip() in ("1", "1.0"):
        return "F"
    raise RecordError(where, f"sex {value!r} is not 0 (male) or 1 (female)")
