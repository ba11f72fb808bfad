"""Chapman-Shaoxing (Zheng et al. 2020, Sci. Data 7:48), original figshare release.

Layout: `ECGData/<FileName>.csv` (one record per file, header row I,II,III,aVR,aVL,aVF,V1..V6,
5000 rows at 500 Hz, values in µV) and `Diagnostics.xlsx` (or a CSV export `Diagnostics.csv`) with
FileName, Rhythm, Beat, PatientAge, Gender. The reference code reads the raw (not denoised) CSVs and
multiplies by 0.001 (µV → mV); so do we (`denoised=True` reads `ECGDataDenoised/`).

Label sets as in the reference code: "rhythm" (Rhythm), "condition" (Beat codes, "NONE" dropped),
"all" (both). One record per patient in this release, so no patient ids.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecg_tune.data.record import RawRecord
from ecg_tune.data.sources.base import (
    RecordRef,
    check_root,
    fingerprint,
    inside,
    no_records,
    normalise_leads,
    parse_age,
    parse_sex,
    read_ref_error,
    read_table,
)
from ecg_tune.errors import DatasetError, RecordError

FS = 500.0
UV_TO_MV = 1e-3
_COLUMNS = ("FileName", "Rhythm", "Beat", "PatientAge", "Gender")


def _codes(value: Any, drop: str = "NONE") -> list[str]:
    if not isinstance(value, str):
        return []
    return sorted({c for c in value.split() if c and c != drop})


def read_diagnostics(root: Path) -> tuple[Path, pd.DataFrame]:
    csv, xlsx = root / "Diagnostics.csv", root / "Diagnostics.xlsx"
    if csv.is_file():
        path, df = csv, read_table(csv, "Chapman diagnostics CSV", dtype={"FileName": str})
    elif xlsx.is_file():
        if importlib.util.find_spec("openpyxl") is None:
            raise DatasetError(
                f"{xlsx}: reading .xlsx needs openpyxl (pip install openpyxl), or save it as Diagnostics.csv"
            )
        path, df = xlsx, pd.read_excel(xlsx, dtype={"FileName": str})
    else:
        raise DatasetError(f"{root}: Chapman diagnostics spreadsheet (Diagnostics.xlsx or Diagnostics.csv) is missing")
    missing = [c for c in _COLUMNS if c not in df.columns]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}")
    return path, df


class ChapmanSource:
    name = "chapman"
    default_label_set = "all"

    def __init__(self, denoised: bool = False):
        self.folder = "ECGDataDenoised" if denoised else "ECGData"

    def list_records(self, root: Path) -> list[RecordRef]:
        root = check_root(root)
        path, df = read_diagnostics(root)
        if df.empty:
            raise no_records(root, f"rows in {path.name}")
        refs = []
        for row in df.to_dict("records"):
            rid = str(row["FileName"]).strip()
            where = f"{path} (FileName {rid})"
            rhythm, condition = _codes(row["Rhythm"]), _codes(row["Beat"])
            meta = {
                "where": where,
                "labels": {"rhythm": rhythm, "condition": condition, "all": sorted(set(rhythm) | set(condition))},
                "age": row["PatientAge"],
                "sex": row["Gender"],
            }
            csv = inside(root, f"{self.folder}/{rid}.csv")
            if csv is None or "/" in rid:
                refs.append(RecordRef(rid, where, meta, error=f"FileName {rid!r} is not a file name inside {root}"))
            else:
                refs.append(RecordRef(rid, str(csv), meta))
        return refs

    def read(self, ref: RecordRef) -> RawRecord:
        read_ref_error(ref)
        try:
            df = pd.read_csv(ref.path)
        except FileNotFoundError:
            raise RecordError(ref.path, "signal file is missing") from None
        except (OSError, ValueError, pd.errors.ParserError) as e:
            raise RecordError(ref.path, f"cannot read CSV: {e}") from None
        names, signs = normalise_leads([str(c) for c in df.columns], ref.path)
        try:
            values = df.to_numpy(dtype=np.float64)
        except (TypeError, ValueError):
            raise RecordError(ref.path, "non-numeric samples") from None
        if len(values) == 0:
            raise RecordError(ref.path, "no samples")
        meta = ref.meta
        return RawRecord(
            record_id=ref.record_id,
            source=self.name,
            fs=FS,
            signal=values.T * (UV_TO_MV * signs[:, None]),
            lead_names=names,
            labels=dict(meta["labels"]),
            age=parse_age(meta["age"], meta["where"]),
            sex=parse_sex(meta["sex"], meta["where"]),
            path=ref.path,
        )

    def version(self, root: Path) -> str:
        root = check_root(root)
        path, _ = read_diagnostics(root)
        folder = root / self.folder
        files = [p for p in folder.glob("*.csv")] if folder.is_dir() else []
        return fingerprint(root, files, [path])

    def origin_id(self, record: RawRecord) -> str:
        return f"chapman:{record.record_id}"
