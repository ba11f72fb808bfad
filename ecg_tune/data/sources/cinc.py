"""PhysioNet/CinC Challenge 2020/2021: WFDB headers + MATLAB v4 `.mat` signals, SNOMED-CT codes in `#Dx:`.

The challenge folders mix sampling rates (257 Hz INCART, 500 Hz, 1000 Hz PTB) and lengths; ingest
resamples. `HR<5 digits>` records are the challenge's copy of PTB-XL record <digits>, so their
origin_id is `ptbxl:<int>`: that is what the leakage guard matches against PTB-XL's test folds.
"""

from __future__ import annotations

import re
from pathlib import Path

from ecg_tune.data.record import RawRecord
from ecg_tune.data.sources.base import (
    RecordRef,
    check_root,
    fingerprint,
    no_records,
    parse_age,
    parse_sex,
    read_ref_error,
)
from ecg_tune.data.sources.wfdb import find_headers, read_wfdb_record
from ecg_tune.errors import RecordError

_PTBXL_COPY = re.compile(r"^HR(\d{5})$")
_SNOMED = re.compile(r"^\d+$")


def parse_comments(comments: list[str], path: str) -> tuple[list[str], float | None, str | None]:
    """SNOMED codes, age and sex from the `#Dx:`, `#Age:`, `#Sex:` header lines."""
    codes: list[str] = []
    age: float | None = None
    sex: str | None = None
    for line in comments:
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        if key == "dx":
            parts = [c.strip() for c in value.split(",")]
            bad = [c for c in parts if not _SNOMED.match(c)]
            if bad or not parts:
                raise RecordError(path, f"malformed #Dx line {line!r}: codes must be SNOMED-CT numbers")
            codes = sorted(set(parts))
        elif key == "age":
            age = parse_age(value, path)
        elif key == "sex":
            sex = parse_sex(value, path)
    return codes, age, sex


class CincSource:
    name = "cinc"
    default_label_set = "snomed"

    def list_records(self, root: Path) -> list[RecordRef]:
        root = check_root(root)
        headers = find_headers(root)
        if not headers:
            raise no_records(root, "CinC headers (*.hea)")
        refs: list[RecordRef] = []
        seen: dict[str, str] = {}
        for hea in headers:
            # Record names are the challenge's ids and unique across its folders; a second copy
            # (e.g. the 2020 and 2021 releases side by side) is quarantined rather than merged.
            error = f"record name {hea.stem} also at {seen[hea.stem]}" if hea.stem in seen else None
            seen.setdefault(hea.stem, str(hea))
            refs.append(RecordRef(hea.stem, str(hea), error=error))
        return refs

    def read(self, ref: RecordRef) -> RawRecord:
        read_ref_error(ref)
        record, header = read_wfdb_record(Path(ref.path), ref.record_id, self.name)
        codes, record.age, record.sex = parse_comments(header.comments, ref.path)
        record.labels = {"snomed": codes}
        return record

    def version(self, root: Path) -> str:
        root = check_root(root)
        return fingerprint(root, [p for p in root.rglob("*") if p.suffix in (".hea", ".mat") and p.is_file()])

    def origin_id(self, record: RawRecord) -> str:
        m = _PTBXL_COPY.match(record.record_id)
        return f"ptbxl:{int(m.group(1))}" if m else f"cinc:{record.record_id}"
