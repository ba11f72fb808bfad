"""WFDB records: a header parser, a fast reader for format-16 signal files, and the generic `wfdb` source.

PTB-XL (`.dat`) and the PhysioNet/CinC challenges (`.mat` = MATLAB v4 with a 24-byte preamble,
declared in the header as format "16+24") both store little-endian int16 samples interleaved by
frame, which numpy reads in one call. That is ~30x faster than `wfdb.rdsamp` per record and lets us
check the file length against the header exactly (a truncated file is an error, not a shorter
record). Every other format falls back to `wfdb.rdrecord`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ecg_tune.data.record import RawRecord
from ecg_tune.data.sources.base import (
    RecordRef,
    check_root,
    fingerprint,
    no_records,
    normalise_leads,
    read_ref_error,
    read_table,
)
from ecg_tune.errors import DatasetError, RecordError

_UNITS_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3, "nv": 1e-6}
_FORMAT = re.compile(r"^(\d+)(?:x(\d+))?(?::(\d+))?(?:\+(\d+))?$")
_INVALID_16 = -32768  # WFDB's "no sample" marker in format 16; wfdb.rdsamp turns it into NaN
_DEFAULT_GAIN = 200.0  # WFDB: a gain of 0 or none means 200 adu/mV


@dataclass
class SignalSpec:
    file: str
    fmt: int
    samples_per_frame: int
    skew: int
    byte_offset: int
    gain: float
    baseline: int
    units: str
    name: str


@dataclass
class Header:
    path: Path  # the .hea file
    record_name: str
    fs: float
    n_samples: int | None
    signals: list[SignalSpec]
    comments: list[str] = field(default_factory=list)


def _int(text: str, default: int, path: Path, what: str) -> int:
    if text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise RecordError(str(path), f"not a WFDB header: bad {what} {text!r}") from None


def parse_header(path: Path) -> Header:
    """Parse a single-segment WFDB header; RecordError for anything that is not one."""
    try:
        text = path.read_text(encoding="latin-1")
    except FileNotFoundError:
        raise RecordError(str(path), "header file is missing") from None
    except OSError as e:
        raise RecordError(str(path), f"cannot read header: {e.strerror}") from None
    lines, comments = [], []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comments.append(stripped[1:].strip())
        elif stripped:
            lines.append(stripped)
    if not lines:
        raise RecordError(str(path), "not a WFDB header: no record line")
    fields = lines[0].split()
    if len(fields) < 2:
        raise RecordError(str(path), "not a WFDB header: record line needs a name and a signal count")
    name = fields[0]
    if "/" in name:
        raise RecordError(str(path), f"multi-segment records are not supported (record line {lines[0]!r})")
    n_sig = _int(fields[1], 0, path, "signal count")
    fs = 250.0  # WFDB default when the field is absent
    if len(fields) > 2:
        try:
            fs = float(fields[2].split("/")[0].split("(")[0])
        except ValueError:
            raise RecordError(str(path), f"not a WFDB header: bad sampling frequency {fields[2]!r}") from None
    n_samples = _int(fields[3], 0, path, "sample count") if len(fields) > 3 else None
    if n_sig <= 0:
        raise RecordError(str(path), "header declares no signals")
    if len(lines) - 1 != n_sig:
        raise RecordError(str(path), f"header declares {n_sig} signals but has {len(lines) - 1} signal lines")
    signals = [_parse_signal(line, path) for line in lines[1:]]
    return Header(path, name, fs, n_samples, signals, comments)


def _parse_signal(line: str, path: Path) -> SignalSpec:
    parts = line.split(None, 8)
    if len(parts) < 2:
        raise RecordError(str(path), f"not a WFDB header: bad signal line {line!r}")
    file = parts[0]
    if "/" in file or "\\" in file or file in (".", ".."):
        # Signal files live next to their header; anything else could read outside the dataset.
        raise RecordError(str(path), f"signal file name {file!r} leaves the record's folder")
    if parts[1].isdigit():  # the common case, "16"
        fmt, spf, skew, offset = parts[1], None, None, None
    else:
        m = _FORMAT.match(parts[1])
        if not m:
            raise RecordError(str(path), f"not a WFDB header: bad format field {parts[1]!r}")
        fmt, spf, skew, offset = m.groups()
    gain, baseline, units = _DEFAULT_GAIN, None, "mV"
    if len(parts) > 2:
        gain, baseline, units = _parse_gain(parts[2], path)
    adc_zero = _int(parts[4], 0, path, "ADC zero") if len(parts) > 4 else 0
    name = parts[8].strip() if len(parts) > 8 else ""
    return SignalSpec(
        file=file,
        fmt=int(fmt),
        samples_per_frame=int(spf or 1),
        skew=int(skew or 0),
        byte_offset=int(offset or 0),
        gain=gain,
        baseline=adc_zero if baseline is None else baseline,
        units=units,
        name=name,
    )


def _parse_gain(field: str, path: Path) -> tuple[float, int | None, str]:
    """"1000.0(0)/mV" → (1000.0, 0, "mV"); a gain of 0 means WFDB's default 200."""
    body, _, units = field.partition("/")
    text, paren, rest = body.partition("(")
    try:
        gain = float(text)
        baseline = int(rest[:-1]) if paren else None
        if not np.isfinite(gain) or (paren and not rest.endswith(")")):
            raise ValueError
    except ValueError:
        raise RecordError(str(path), f"not a WFDB header: bad gain field {field!r}") from None
    return gain or _DEFAULT_GAIN, baseline, units or "mV"


def _unit_factors(header: Header) -> np.ndarray:
    factors = []
    for s in header.signals:
        factor = _UNITS_TO_MV.get(s.units.lower())
        if factor is None:
            raise RecordError(str(header.path), f"lead {s.name!r} has units {s.units!r}, not a voltage")
        factors.append(factor)
    return np.array(factors)


def _fast_path(header: Header) -> bool:
    first = header.signals[0]
    return all(
        s.file == first.file and s.fmt == 16 and s.samples_per_frame == 1 and s.skew == 0
        and s.byte_offset == first.byte_offset
        for s in header.signals
    )


def _check_mat_preamble(path: Path, raw: bytes, n_sig: int) -> None:
    """The 20-byte MATLAB v4 header of a CinC `.mat`: int16 little-endian, n_sig rows."""
    if len(raw) < 20:
        raise RecordError(str(path), "MATLAB v4 header is truncated")
    type_code, rows, cols, imag, _ = np.frombuffer(raw[:20], dtype="<i4")
    if type_code != 30 or imag != 0:
        raise RecordError(str(path), f"MATLAB v4 matrix is not little-endian int16 (type {type_code})")
    if rows != n_sig:
        raise RecordError(str(path), f"signal file holds {rows} leads but the header declares {n_sig}")


def read_digital_fast(header: Header) -> np.ndarray:
    """int16 (time, leads) straight from a format-16 file, with exact length checks."""
    spec = header.signals[0]
    path = header.path.parent / spec.file
    n_sig = len(header.signals)
    try:
        with open(path, "rb") as f:
            if path.suffix.lower() == ".mat" and spec.byte_offset >= 20:
                _check_mat_preamble(path, f.read(20), n_sig)
            f.seek(spec.byte_offset)
            data = f.read()
    except FileNotFoundError:
        raise RecordError(str(path), "signal file is missing") from None
    except OSError as e:
        raise RecordError(str(path), f"cannot read signal file: {e.strerror}") from None
    frame = 2 * n_sig
    if len(data) % frame:
        raise RecordError(
            str(path), f"signal file size does not fit {n_sig} leads of int16 ({len(data)} bytes after the offset)"
        )
    n = len(data) // frame
    if header.n_samples is not None and n != header.n_samples:
        what = "truncated" if n < header.n_samples else "longer than declared"
        raise RecordError(str(path), f"signal file is {what}: {n} samples per lead, header says {header.n_samples}")
    return np.frombuffer(data, dtype="<i2").reshape(n, n_sig)


def read_physical(header: Header) -> np.ndarray:
    """float64 (leads, time) in mV, in header lead order."""
    factors = _unit_factors(header)
    if _fast_path(header):
        digital = read_digital_fast(header)
        invalid = digital == _INVALID_16
        if invalid.any():
            leads = sorted({header.signals[i].name for i in np.nonzero(invalid.any(axis=0))[0]})
            raise RecordError(str(header.path), f"missing samples (NaN) in lead(s) {', '.join(leads)}")
        gain = np.array([s.gain for s in header.signals])
        baseline = np.array([s.baseline for s in header.signals], dtype=np.float64)
        return ((digital.T - baseline[:, None]) * (factors / gain)[:, None]).astype(np.float64, copy=False)
    return _read_with_wfdb(header) * factors[:, None]


def _read_with_wfdb(header: Header) -> np.ndarray:
    import wfdb  # only for formats numpy does not read directly

    for s in header.signals:
        if not (header.path.parent / s.file).is_file():
            raise RecordError(str(header.path.parent / s.file), "signal file is missing")
    try:
        rec = wfdb.rdrecord(str(header.path.with_suffix("")), physical=True)
    except Exception as e:  # wfdb raises bare ValueError/IndexError/... for malformed files
        raise RecordError(str(header.path), f"wfdb cannot read the record: {type(e).__name__}: {e}") from None
    signal = rec.p_signal
    if signal is None or signal.ndim != 2 or signal.shape[1] != len(header.signals):
        raise RecordError(str(header.path), "signal data do not match the header's lead count")
    if header.n_samples is not None and signal.shape[0] != header.n_samples:
        raise RecordError(
            str(header.path), f"signal holds {signal.shape[0]} samples per lead, header says {header.n_samples}"
        )
    return signal.T.astype(np.float64)


def read_wfdb_record(hea: Path, record_id: str, source: str) -> tuple[RawRecord, Header]:
    """A RawRecord (no labels) from a `.hea` path; the header is returned for its comments."""
    header = parse_header(hea)
    if not np.isfinite(header.fs) or header.fs <= 0:
        raise RecordError(str(hea), f"sampling frequency must be positive, header says {header.fs:g}")
    names, signs = normalise_leads([s.name for s in header.signals], str(hea))
    signal = read_physical(header) * signs[:, None]
    return RawRecord(record_id, source, header.fs, signal, names, path=str(hea)), header


def find_headers(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.hea") if p.is_file())


def split_codes(text: str) -> list[str]:
    return sorted({c.strip() for c in re.split(r"[;,]", text) if c.strip()})


class WfdbSource:
    """Any folder of WFDB records (searched recursively); optional labels from a CSV.

    `label_csv` (relative to the root or absolute) has a record id column (`id_column`, matched
    against the record's path relative to the root without suffix, or its bare name) and a label
    column of `;`- or `,`-separated codes, which become the label set "labels".
    """

    name = "wfdb"
    default_label_set = "labels"

    def __init__(self, label_csv: str | None = None, id_column: str = "record_id", label_column: str = "labels"):
        self.label_csv = label_csv
        self.id_column = id_column
        self.label_column = label_column

    def list_records(self, root: Path) -> list[RecordRef]:
        root = check_root(root)
        headers = find_headers(root)
        if not headers:
            raise no_records(root, "WFDB headers (*.hea)")
        labels = self._labels(root) if self.label_csv else None
        refs = []
        for hea in headers:
            rid = hea.relative_to(root).with_suffix("").as_posix()
            meta = {}
            if labels is not None:
                meta["labels"] = {"labels": labels.get(rid, labels.get(hea.stem, []))}
            refs.append(RecordRef(rid, str(hea), meta))
        return refs

    def _labels(self, root: Path) -> dict[str, list[str]]:
        path = Path(str(self.label_csv))
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            raise DatasetError(f"{path}: label CSV is missing")
        df = read_table(path, "label CSV", dtype=str, keep_default_na=False)
        missing = [c for c in (self.id_column, self.label_column) if c not in df.columns]
        if missing:
            raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}; it has {', '.join(df.columns)}")
        return {rid.strip(): split_codes(codes) for rid, codes in zip(df[self.id_column], df[self.label_column])}

    def read(self, ref: RecordRef) -> RawRecord:
        read_ref_error(ref)
        record, _ = read_wfdb_record(Path(ref.path), ref.record_id, self.name)
        record.labels = dict(ref.meta.get("labels", {}))
        return record

    def version(self, root: Path) -> str:
        root = check_root(root)
        return fingerprint(root, [p for p in root.rglob("*") if p.is_file()])

    def origin_id(self, record: RawRecord) -> str:
        return f"wfdb:{record.record_id}"
