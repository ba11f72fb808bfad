"""CODE (Ribeiro et al. 2020, Nat. Commun. 11:1760): 400 Hz tracings in HDF5, zero padded to 4096 samples.

Two published layouts are read:
- the annotated test set (Zenodo 3625006): `ecg_tracings.hdf5` with dataset `tracings` (N, 4096, 12),
  `attributes.csv` (age, sex M/F, or is_male) and `annotations/<annotator>.csv` with 0/1 columns
  1dAVb, RBBB, LBBB, SB, AF, ST, row i = tracing i. This is the "Ribeiro test set" of the paper.
- CODE-15% (Zenodo 4916206): `exams.csv` (exam_id, age, is_male, patient_id, trace_file, the same six
  columns) and `exams_part*.hdf5` files with datasets `tracings` and `exam_id`.

Lead order: DI, DII, DIII, AVR, AVL, AVF, V1-V6, as in the authors' model README and the reference
code's `prepare_data_ribeiro_test` (one copy of the data README lists AVL, AVF, AVR; we follow the
code that produced the paper's results).

Units: the authors' README says "at the scale 1e-4V: so if the signal is in V it should be multiplied
by 1000", which contradicts itself; the reference code uses the values as they are, i.e. as mV. We do
the same (`scale=1.0`, multiply to get mV); pass `scale=0.1` to read them as 1e-4 V instead.

Zero padding: removed as the reference code does, assuming symmetric padding: the number of all-zero
rows, halved, is cut from each end.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecg_tune.data.record import RawRecord
from ecg_tune.data.sources.base import (
    RecordRef,
    check_root,
    inside,
    no_records,
    parse_age,
    parse_sex,
    read_ref_error,
    read_table,
    require_file,
)
from ecg_tune.errors import DatasetError, RecordError

FS = 400.0
LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
CLASSES = ["1dAVb", "RBBB", "LBBB", "SB", "AF", "ST"]
TEST_FILE = "ecg_tracings.hdf5"
EXAMS_FILE = "exams.csv"
TEST_PREFIX = "test-"  # record ids of the test set: "test-00000" (row number), CODE-15%: the exam id


def trim_padding(tracing: np.ndarray) -> np.ndarray:
    """(time, leads) without the symmetric zero padding (all-zero rows // 2 from each end)."""
    pad = int(np.count_nonzero(~tracing.any(axis=1))) // 2
    return tracing[pad : len(tracing) - pad] if pad else tracing


def _labels(row: Any) -> list[str]:
    return sorted(c for c in CLASSES if float(row[c]) > 0)


def _sex(row: dict, where: str) -> str | None:
    if "sex" in row:
        return parse_sex(row["sex"], where)
    if "is_male" in row:
        v = str(row["is_male"]).strip().lower()
        if v in ("1", "1.0", "true"):
            return "M"
        if v in ("0", "0.0", "false"):
            return "F"
        return parse_sex(None if v in ("", "nan") else v, where)
    return None


class Code15Source:
    name = "code15"
    default_label_set = "code"

    def __init__(self, annotation: str = "gold_standard", scale: float = 1.0):
        self.annotation = annotation
        self.scale = float(scale)
        self._files: dict[str, Any] = {}  # open h5py files and exam-id indexes, per process

    def __getstate__(self) -> dict:
        return {"annotation": self.annotation, "scale": self.scale, "_files": {}}

    def list_records(self, root: Path) -> list[RecordRef]:
        root = check_root(root)
        if (root / EXAMS_FILE).is_file():
            return self._list_code15(root)
        if (root / TEST_FILE).is_file():
            return self._list_test(root)
        raise no_records(root, f"CODE files ({TEST_FILE} or {EXAMS_FILE})")

    def _list_test(self, root: Path) -> list[RecordRef]:
        import h5py

        h5 = root / TEST_FILE
        try:
            with h5py.File(h5, "r") as f:
                n = int(f["tracings"].shape[0])
        except (OSError, KeyError) as e:
            raise DatasetError(f"{h5}: not a CODE tracings file with a 'tracings' dataset ({e})") from None
        attrs = self._table(root / "attributes.csv", n, ("age",)) if (root / "attributes.csv").is_file() else None
        annotation = root / "annotations" / f"{self.annotation}.csv"
        labels = self._table(annotation, n, tuple(CLASSES)) if annotation.is_file() else None
        refs = []
        for i in range(n):
            meta: dict[str, Any] = {"index": i, "where": f"{h5} (tracing {i})"}
            if attrs is not None:
                meta["attrs"] = attrs.iloc[i].to_dict()
            if labels is not None:
                meta["labels"] = {"code": _labels(labels.iloc[i])}
            refs.append(RecordRef(f"{TEST_PREFIX}{i:05d}", str(h5), meta))
        return refs

    def _list_code15(self, root: Path) -> list[RecordRef]:
        path = root / EXAMS_FILE
        exams = self._table(path, None, ("exam_id", "age", "is_male", "trace_file", *CLASSES))
        refs = []
        for row in exams.to_dict("records"):
            rid = str(int(row["exam_id"]))
            where = f"{path} (exam_id {rid})"
            h5 = inside(root, str(row["trace_file"]))
            meta = {"exam_id": int(row["exam_id"]), "where": where, "attrs": row, "labels": {"code": _labels(row)}}
            patient = row.get("patient_id")
            meta["patient_id"] = None if pd.isna(patient) else str(int(patient))
            if h5 is None:
                refs.append(RecordRef(rid, where, meta, error=f"trace_file {row['trace_file']!r} is outside {root}"))
            else:
                refs.append(RecordRef(rid, str(h5), meta))
        return refs

    @staticmethod
    def _table(path: Path, rows: int | None, columns: tuple[str, ...]) -> pd.DataFrame:
        df = read_table(require_file(path, "CODE table"), "CODE table")
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}")
        if rows is not None and len(df) != rows:
            raise DatasetError(f"{path}: {len(df)} rows but the tracings file holds {rows} tracings")
        return df

    def _open(self, path: str) -> Any:
        import h5py

        if path not in self._files:
            try:
                f = h5py.File(path, "r")
                index = None
                if "exam_id" in f:
                    ids = np.asarray(f["exam_id"][:])
                    index = {int(e): i for i, e in enumerate(ids)}
                self._files[path] = (f, index)
            except OSError as e:
                raise RecordError(path, f"cannot open HDF5 file: {e}") from None
        return self._files[path]

    def read(self, ref: RecordRef) -> RawRecord:
        read_ref_error(ref)
        meta = ref.meta
        f, index = self._open(ref.path)
        if "exam_id" in meta:
            if index is None or meta["exam_id"] not in index:
                raise RecordError(ref.path, f"exam_id {meta['exam_id']} is not in this file")
            row = index[meta["exam_id"]]
        else:
            row = meta["index"]
        try:
            tracing = np.asarray(f["tracings"][row], dtype=np.float64)
        except (KeyError, OSError, IndexError) as e:
            raise RecordError(ref.path, f"cannot read tracing {row}: {e}") from None
        if tracing.ndim != 2 or tracing.shape[1] != len(LEADS):
            raise RecordError(ref.path, f"tracing {row} has shape {tracing.shape}, expected (time, 12)")
        signal = trim_padding(tracing)
        if not signal.any():
            raise RecordError(ref.path, f"tracing {row} is all zeros")
        attrs = meta.get("attrs", {})
        return RawRecord(
            record_id=ref.record_id,
            source=self.name,
            fs=FS,
            signal=signal.T * self.scale,
            lead_names=list(LEADS),
            labels=dict(meta.get("labels", {})),
            patient_id=meta.get("patient_id"),
            age=parse_age(attrs.get("age"), meta["where"]),
            sex=_sex(attrs, meta["where"]),
            path=ref.path,
        )

    def version(self, root: Path) -> str:
        root = check_root(root)
        h = hashlib.sha256()
        for path in sorted(root.rglob("*")):
            if path.is_file():
                h.update(f"{path.relative_to(root).as_posix()}\0{path.stat().st_size}\n".encode())
                if path.suffix == ".csv":
                    h.update(path.read_bytes())
        return "sha256:" + h.hexdigest()[:16]

    def origin_id(self, record: RawRecord) -> str:
        # Exam ids of CODE-15% and row numbers of the test set are different id spaces.
        if record.record_id.startswith(TEST_PREFIX):
            return f"code-test:{int(record.record_id[len(TEST_PREFIX):])}"
        return f"code15:{record.record_id}"
