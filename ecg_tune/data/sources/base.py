"""What every source reader shares: the record reference, the reader protocol and small helpers.

A source turns one public corpus layout into `RawRecord`s. `list_records` is cheap (index files and
directory walks only) and returns picklable `RecordRef`s, so ingest can hand them to worker processes;
`read` does the expensive part for one record and raises `RecordError(path, reason)` for anything wrong
with that record, which ingest turns into a quarantine entry.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ecg_tune.data.leads import normalise_lead_name
from ecg_tune.data.record import RawRecord
from ecg_tune.errors import DatasetError, RecordError


@dataclass
class RecordRef:
    """A pointer to one record: its id, the file it lives in and what the index already told us.

    `error` is set by `list_records` when the index itself is wrong for this record (unparseable
    labels, a file name escaping the root, a duplicate name); `read` then raises it, so the problem
    ends up in the quarantine instead of stopping the whole ingest.
    """

    record_id: str
    path: str
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


class Source(Protocol):
    name: str
    default_label_set: str

    def list_records(self, root: Path) -> list[RecordRef]: ...

    def read(self, ref: RecordRef) -> RawRecord: ...

    def version(self, root: Path) -> str: ...

    def origin_id(self, record: RawRecord) -> str: ...


def check_root(root: Path) -> Path:
    """The dataset folder, or a DatasetError naming it."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder does not exist")
    return root


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DatasetError(f"{path}: {what} is missing")
    return path


def read_table(path: Path, what: str, **kwargs: Any) -> Any:
    """`pandas.read_csv` of an index or label table; a file that is not a readable CSV is a DatasetError
    naming it (an empty, binary or mis-encoded file would otherwise surface as a pandas traceback)."""
    import pandas as pd

    try:
        return pd.read_csv(path, **kwargs)
    except FileNotFoundError:
        raise DatasetError(f"{path}: {what} is missing") from None
    except (UnicodeDecodeError, pd.errors.EmptyDataError, pd.errors.ParserError, ValueError, OSError) as e:
        raise DatasetError(f"{path}: {what} is not a readable CSV ({type(e).__name__}: {e})") from None


def no_records(root: Path, what: str) -> DatasetError:
    return DatasetError(f"{root}: no {what} found (empty or wrong folder?)")


def inside(root: Path, relative: str) -> Path | None:
    """`root / relative` if it stays inside `root`, else None (an index must never make us read elsewhere).

    A lexical check (no "..", not absolute), so that corpora laid out with symlinks still work.
    """
    if not relative or os.path.isabs(relative) or "\\" in relative:
        return None
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return Path(root, *parts)


def read_ref_error(ref: RecordRef) -> None:
    if ref.error:
        raise RecordError(ref.path, ref.error)


def normalise_leads(names: Sequence[str], path: str) -> tuple[list[str], np.ndarray]:
    """Canonical lead names and a per-lead sign (-1 for an inverted lead such as "-aVR").

    An unknown or duplicated lead name is a RecordError: silently dropping or overwriting a lead would
    put the wrong signal under a lead name.
    """
    result = _normalise(tuple(names))
    if isinstance(result, str):
        raise RecordError(path, result)
    return list(result[0]), np.array(result[1])


@functools.lru_cache(maxsize=256)  # a corpus uses a handful of lead-name lists
def _normalise(names: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[float, ...]] | str:
    out: list[str] = []
    signs = []
    for raw in names:
        name = raw.strip()
        sign = 1.0
        if name.startswith("-"):
            # Cabrera-style "-aVR" is aVR inverted; the sign has to be undone, not just the name.
            sign, name = -1.0, name[1:]
        lead = normalise_lead_name(name)
        if lead is None:
            return f"unknown lead name {raw!r}"
        if lead in out:
            return f"lead {lead} appears twice (as {names[out.index(lead)]!r} and {raw!r})"
        out.append(lead)
        signs.append(sign)
    return tuple(out), tuple(signs)


_MISSING = {"", "nan", "none", "null", "unknown", "na", "n/a", "-"}


def parse_age(value: Any, path: str) -> float | None:
    """A float age, None for the usual missing markers (NaN, Unknown, empty), RecordError otherwise."""
    if value is None:
        return None
    if isinstance(value, int | float | np.integer | np.floating):
        v = float(value)
        return None if math.isnan(v) else v
    text = str(value).strip()
    if text.lower() in _MISSING:
        return None
    try:
        v = float(text)
    except ValueError:
        raise RecordError(path, f"non-numeric age {text!r}") from None
    return None if math.isnan(v) else v


def parse_sex(value: Any, path: str) -> str | None:
    """"M" | "F" | None from the spellings used by the corpora (Male, female, M, f, MALE...)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip().lower()
    if text in _MISSING:
        return None
    if text in ("m", "male", "man"):
        return "M"
    if text in ("f", "female", "woman"):
        return "F"
    raise RecordError(path, f"unrecognised sex {value!r}")


def fingerprint(root: Path, files: Iterable[Path], hash_contents: Iterable[Path] = ()) -> str:
    """A cheap version string: sha256 over relative names and sizes (and the bytes of small index files)."""
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(f"{path.relative_to(root).as_posix()}\0{path.stat().st_size}\n".encode())
    for path in sorted(hash_contents):
        h.update(path.read_bytes())
    return "sha256:" + h.hexdigest()[:16]
