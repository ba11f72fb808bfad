"""Source files → Parquet shards + manifest.json, in parallel and resumable.

Plan: the sources' record refs, sorted by record id, are cut into shards of `records_per_shard`
(shard k always holds the same ids) and each shard into pieces of `PIECE` records, the unit of work
of a worker process.

1. Read: each piece is read, checked, resampled and quantised (`prepare`); its int16 data and row
   metadata go to the journal (`<out>/.ingest/piece-*.bin|json`), bad records to its quarantine list.
2. Folds: records whose source has no folds get 10 label-stratified, patient-grouped folds
   (`folds.assign_folds`), computed from all rows at once, hence after step 1.
3. Write: each shard is encoded from its pieces and written atomically; its sha256 goes to the
   journal (`shard-*.json`) and the piece data are deleted. A shard whose rows all have source folds
   is written as soon as its pieces are read, on the same workers, while other pieces are still being
   read (`_EarlyShards`); should a later record bring a label set it lacks, it is rewritten.
4. The manifest is written last, atomically.

A re-run with the same settings skips every shard whose file still matches its journal checksum
(and fold column) and every piece already read; the journal stays after success (it is small), so
deleting manifest.json and re-running rewrites nothing. Different settings reset the journal.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from ecg_tune.data import shards as shard_io
from ecg_tune.data.folds import assign_folds
from ecg_tune.data.ingest_record import UNITS_PER_MV, Target, prepare  # noqa: F401 (re-exported)
from ecg_tune.data.ingest_report import warn_about
from ecg_tune.data.ingest_tasks import PieceTask, ShardTask, process_records, run_piece, run_shard
from ecg_tune.data.journal import JOURNAL, Journal
from ecg_tune.data.leads import lead_order as resolve_lead_order
from ecg_tune.data.lock import claim_output
from ecg_tune.data.manifest import FORMAT_VERSION, MANIFEST, Manifest, label_set_summary, normalization
from ecg_tune.data.record import RawRecord
from ecg_tune.data.sources import RecordRef, Source, build_source
from ecg_tune.data.workers import Runner, default_workers
from ecg_tune.errors import ConfigError, DatasetError, RecordError

PIECE = 250  # records per work unit: small enough to spread 500 records over cores, big enough to amortise


# ---------------------------------------------------------------------------------------------------
# Public entry points


def _check_settings(fs: float, records_per_shard: int, lead_order: Any) -> Target:
    if not (isinstance(fs, int | float) and np.isfinite(fs) and fs > 0):
        raise ConfigError("fs", f"target sampling frequency must be positive, got {fs!r}")
    if not isinstance(records_per_shard, int) or records_per_shard < 1:
        raise ConfigError("records_per_shard", f"must be a positive integer, got {records_per_shard!r}")
    return Target(tuple(resolve_lead_order(lead_order)), float(fs))


def ingest(
    source: str,
    root: str | Path,
    out: str | Path,
    *,
    fs: float = 100,
    workers: int | None = None,
    lead_order: str | Sequence[str] = "default",
    records_per_shard: int = 2000,
    progress: bool = True,
    fold_seed: int = 0,
    **source_options: Any,
) -> Manifest:
    """Ingest the corpus at `root` with source reader `source` into a shard dataset at `out`."""
    target = _check_settings(fs, records_per_shard, lead_order)
    src = build_source(source, source_options)
    root, out = Path(root), Path(out)
    refs = _unique(sorted(src.list_records(root), key=lambda r: r.record_id))
    version = src.version(root)
    settings = {
        "format_version": FORMAT_VERSION, "source": source, "options": source_options, "root": str(root.resolve()),
        "source_version": version, "fs": target.fs, "lead_names": target.lead_names,
        "units_per_mv": target.units_per_mv, "records_per_shard": records_per_shard, "piece": PIECE,
        "fold_seed": fold_seed, "records": hashlib.sha256("\n".join(r.record_id for r in refs).encode()).hexdigest(),
    }
    with claim_output(out, source, str(settings["root"])):
        manifest, rows = _ingest_claimed(out, src, source, source_options, refs, settings, target, workers, progress)
    warn_about(manifest, rows, target, out)
    return manifest


def _ingest_claimed(out: Path, src: Source, source: str, source_options: dict[str, Any], refs: list[RecordRef],
                    settings: dict[str, Any], target: Target, workers: int | None,
                    progress: bool) -> tuple[Manifest, list[list[dict]]]:
    fold_seed, version, records_per_shard = settings["fold_seed"], settings["source_version"], settings["records_per_shard"]
    journal = Journal.start(out, settings)
    _remove_stale_temp_files(out)
    layout = [refs[k : k + records_per_shard] for k in range(0, len(refs), records_per_shard)]
    pieces = [[chunk[p : p + PIECE] for p in range(0, len(chunk), PIECE)] for chunk in layout]
    sizes = [len(p) for p in pieces]
    with Runner(workers or default_workers(), progress, preload_scipy=_resampling_likely(src, refs, target)) as runner:
        valid = {k for k in range(len(pieces)) if _shard_valid(journal, k, len(pieces[k]))}
        label_sets = None  # known once every row has been read
        while True:
            todo = [(k, p) for k in range(len(pieces)) if k not in valid for p in range(sizes[k])
                    if not journal.piece_ready(k, p)]
            tasks = [PieceTask(k, p, pieces[k][p], source, source_options, target, str(out)) for k, p in todo]
            early = _EarlyShards(journal, sizes, valid, set(todo), target, str(out), label_sets)
            runner.run(run_piece, tasks, f"reading {source}", lambda t: len(t.refs), follow=early)
            rows, quarantine = _load_rows(journal, sizes, early.metas)
            _fill_folds(rows, src.default_label_set, fold_seed)
            label_sets = _label_set_names(rows)
            stale = {k for k in valid if not _folds_match(out, journal, k, rows[k])}
            stale |= {k for k, sets in early.written.items() if sets != label_sets}
            valid |= set(early.written)
            if not stale:
                break
            valid -= stale  # its fold or label columns are out of date: read its pieces again and rewrite it
        return _finish(
            out, journal, runner, pieces=sizes, rows=rows, quarantine=quarantine, valid=valid,
            target=target, source=source, source_version=version, default_label_set=src.default_label_set,
        ), rows


def _resampling_likely(src: Source, refs: Sequence[RecordRef], target: Target) -> bool:
    """Whether the first readable record is at another rate than the target (then the workers will
    need scipy.signal). A guess, not a promise: a mixed-rate corpus whose first record is at the
    target rate still resamples the others correctly, its workers just import scipy themselves."""
    for ref in refs[:5]:
        try:
            return float(src.read(ref).fs) != target.fs
        except Exception:  # an unreadable record is quarantined later; try the next one
            continue
    return True


def write_dataset(
    records: Iterable[RawRecord],
    out: str | Path,
    *,
    source: str,
    source_version: str,
    fs: float,
    lead_order: str | Sequence[str] = "default",
    records_per_shard: int = 2000,
    fold_seed: int = 0,
    default_label_set: str | None = None,
) -> Manifest:
    """Write in-memory records (e.g. the synthetic generator's) as a shard dataset, in their order.

    Records are resampled if not at `fs`; records with a fold keep it, the others get stratified folds.
    `default_label_set` defaults to "all" if records carry it, else the first label set by name.
    """
    target = _check_settings(fs, records_per_shard, lead_order)
    out = Path(out)
    with claim_output(out, source):
        return _write_claimed(records, out, target, source, source_version, records_per_shard, fold_seed,
                              default_label_set)


def _write_claimed(records: Iterable[RawRecord], out: Path, target: Target, source: str, source_version: str,
                   records_per_shard: int, fold_seed: int, default_label_set: str | None) -> Manifest:
    journal = Journal.start(out, {"write_dataset": source}, resume=False)
    _remove_stale_temp_files(out)
    sizes = [min(PIECE, records_per_shard - s) for s in range(0, records_per_shard, PIECE)]  # pieces of a shard
    n_pieces: list[int] = []  # per shard
    seen: set[str] = set()
    batch: list[RawRecord] = []

    def origin_of(record: RawRecord) -> str:
        return getattr(record, "origin_id", None) or f"{record.source}:{record.record_id}"

    def flush() -> None:
        if not n_pieces or n_pieces[-1] == len(sizes):
            n_pieces.append(0)
        items = [(r.record_id, r.path, _duplicate_check(r, seen)) for r in batch]
        rows, data, quarantine = process_records(items, target, origin_of)
        journal.save_piece(len(n_pieces) - 1, n_pieces[-1], rows, data, quarantine)
        n_pieces[-1] += 1
        batch.clear()

    def next_piece_size() -> int:
        open_shard = n_pieces and n_pieces[-1] < len(sizes)
        return sizes[n_pieces[-1] if open_shard else 0]

    for record in records:
        batch.append(record)
        if len(batch) == next_piece_size():
            flush()
    if batch:
        flush()
    if not n_pieces:
        raise DatasetError(f"{out}: no records were given to write")
    rows, quarantine = _load_rows(journal, n_pieces)
    sets = {name for shard_rows in rows for r in shard_rows for name in r["labels"]}
    default = default_label_set or ("all" if "all" in sets else min(sets, default=None))
    _fill_folds(rows, default, fold_seed)
    with Runner(1, progress=False) as runner:
        manifest = _finish(
            out, journal, runner, pieces=n_pieces, rows=rows, quarantine=quarantine, valid=set(), target=target,
            source=source, source_version=source_version, default_label_set=default,
        )
    shutil.rmtree(journal.dir, ignore_errors=True)  # nothing to resume: the records came from memory
    return manifest


def _duplicate_check(record: RawRecord, seen: set[str]) -> Callable[[], RawRecord]:
    def read() -> RawRecord:
        if record.record_id in seen:
            raise RecordError(record.path or record.record_id, f"duplicate record id {record.record_id!r}")
        seen.add(record.record_id)
        return record

    return read


def _unique(refs: list[RecordRef]) -> list[RecordRef]:
    """Sorted refs with every repeated record id after the first marked as an error (quarantined)."""
    out = []
    for i, ref in enumerate(refs):
        if i and ref.record_id == refs[i - 1].record_id:
            ref = replace(ref, error=ref.error or f"duplicate record id {ref.record_id!r}")
        out.append(ref)
    return out


def _shard_valid(journal: Journal, shard: int, n_pieces: int) -> bool:
    entry = journal.shard_entry(shard)
    if entry is None or any(journal.piece_meta(shard, p) is None for p in range(n_pieces)):
        return False
    path = journal.out / entry["file"]
    return path.is_file() and shard_io.file_sha256(path) == entry["sha256"]


def _load_rows(
    journal: Journal, pieces: list[int], known: Mapping[tuple[int, int], dict] | None = None
) -> tuple[list[list[dict]], list[dict]]:
    """Every piece's rows and quarantine entries, per shard (`known`: pieces already in memory)."""
    rows: list[list[dict]] = []
    quarantine: list[dict] = []
    for k, n in enumerate(pieces):
        shard_rows = []
        for p in range(n):
            meta = (known or {}).get((k, p)) or journal.piece_meta(k, p)
            if meta is None:
                raise DatasetError(f"{journal.piece_json(k, p)}: ingest journal entry is missing or corrupt")
            shard_rows += meta["rows"]
            quarantine += meta["quarantine"]
        rows.append(shard_rows)
    return rows, quarantine


class _EarlyShards:
    """Step 3 for a shard as soon as its pieces are read, while other pieces are still being read.

    Only for shards whose rows all have source folds (computed folds need every row: step 2), and
    with the label sets seen so far (or `label_sets`, when known): `ingest` rewrites a shard whose
    label sets turn out different once every row is in (`written`).
    """

    def __init__(self, journal: Journal, sizes: list[int], skip: set[int], todo: set[tuple[int, int]],
                 target: Target, out: str, label_sets: list[str] | None):
        self.journal, self.sizes, self.target, self.out, self.label_sets = journal, sizes, target, out, label_sets
        self.missing = {k: {p for p in range(n) if (k, p) in todo} for k, n in enumerate(sizes) if k not in skip}
        self.metas: dict[tuple[int, int], dict] = {}
        self.seen: set[str] = set()
        self.written: dict[int, list[str]] = {}  # shard -> the label sets it was written with

    def __call__(self, task: PieceTask, meta: dict) -> list[tuple[Callable[[Any], Any], Any]]:
        k = task.shard
        self.metas[(k, task.piece)] = meta
        self.seen.update(name for r in meta["rows"] for name in r["labels"])
        self.missing[k].discard(task.piece)
        if self.missing[k]:
            return []
        for p in range(self.sizes[k]):  # pieces read by an earlier run
            if (k, p) not in self.metas:
                if (m := self.journal.piece_meta(k, p)) is None:
                    return []  # gone meanwhile: the end of `ingest` reports it
                self.metas[(k, p)] = m
                self.seen.update(name for r in m["rows"] for name in r["labels"])
        rows = [r for p in range(self.sizes[k]) for r in self.metas[(k, p)]["rows"]]
        if not rows or any(r["fold"] is None for r in rows):
            return []
        sets = self.label_sets if self.label_sets is not None else sorted(self.seen)
        self.written[k] = sets
        return [(run_shard, ShardTask(k, self.sizes[k], [_shard_row(r) for r in rows], sets, self.target, self.out))]


def _label_set_names(rows: list[list[dict]]) -> list[str]:
    return sorted({name for shard_rows in rows for r in shard_rows for name in r["labels"]})


def _fill_folds(rows: list[list[dict]], label_set: str | None, seed: int) -> None:
    """Give every row without a source fold one of 10 stratified, patient-grouped folds (in place).

    A patient who already has a fold from the source keeps all their records in it.
    """
    flat = [r for shard_rows in rows for r in shard_rows]
    known = {r["patient_id"]: r["fold"] for r in flat if r["fold"] is not None and r["patient_id"] is not None}
    todo = []
    for r in flat:
        if r["fold"] is None:
            if r["patient_id"] in known:
                r["fold"] = known[r["patient_id"]]
            else:
                todo.append(r)
    if not todo:
        return
    folds = assign_folds(
        [r["labels"].get(label_set, []) if label_set else [] for r in todo],
        [r["patient_id"] for r in todo],
        seed=seed,
    )
    for r, f in zip(todo, folds):
        r["fold"] = int(f)


def _folds_match(out: Path, journal: Journal, shard: int, rows: list[dict]) -> bool:
    entry = journal.shard_entry(shard)
    if entry is None:
        return False
    try:
        table = pq.read_table(out / entry["file"], columns=["record_id", "fold"])
    except Exception:  # unreadable shard: rewrite it
        return False
    return table.column("record_id").to_pylist() == [r["record_id"] for r in rows] and table.column(
        "fold"
    ).to_pylist() == [r["fold"] for r in rows]


def _finish(
    out: Path, journal: Journal, runner: Runner, *, pieces: list[int], rows: list[list[dict]],
    quarantine: list[dict], valid: set[int], target: Target, source: str, source_version: str,
    default_label_set: str | None,
) -> Manifest:
    flat = [r for shard_rows in rows for r in shard_rows]
    if not flat:
        first = "; ".join(f"{q['path']}: {q['reason']}" for q in quarantine[:3])
        raise DatasetError(f"{out}: none of {len(quarantine)} records could be ingested ({first})")
    label_sets = _label_set_names(rows)
    tasks = [
        ShardTask(k, pieces[k], [_shard_row(r) for r in rows[k]], label_sets, target, str(out))
        for k in range(len(pieces)) if k not in valid
    ]
    runner.run(run_shard, tasks, "writing shards", lambda t: max(1, len(t.rows)))
    entries = []
    for k in range(len(pieces)):
        entry = journal.shard_entry(k)
        if entry is None:
            raise DatasetError(f"{journal.shard_json(k)}: shard {k} was written but its journal entry is missing")
        entries.append(entry)
    _remove_stale_shards(out, {e["file"] for e in entries})
    folds = [r["fold"] for r in flat]
    labels = [r["labels"] for r in flat]
    manifest = Manifest(
        source=source,
        source_version=source_version,
        lead_names=list(target.lead_names),
        fs=target.fs,
        normalization=normalization(
            [r["sum"] for r in flat], [r["sumsq"] for r in flat], [r["n_samples"] for r in flat], folds,
            len(target.lead_names), target.units_per_mv,
        ),
        label_sets=label_set_summary(labels, folds, label_sets),
        default_label_set=default_label_set if default_label_set in label_sets else None,
        shards=entries,
        quarantine=sorted(quarantine, key=lambda q: (q["record"], q["path"])),
        n_records=len(flat),
        clipped_samples=sum(r["clipped"] for r in flat),
        flat_leads=sum(r["flat"] for r in flat),
        notes=[{**n, "record": r["record_id"]} for r in flat for n in r.get("notes", [])],
        signal_encoding={"dtype": "int16", "units_per_mv": target.units_per_mv, "layout": "time-major"},
    )
    _save_manifest(out / MANIFEST, manifest)
    return manifest


def _shard_row(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("sum", "sumsq", "clipped", "flat", "notes", "source_fs")}


_TEMP_FILE = re.compile(r"^\..+\.\d+\.tmp$")  # shards.atomic_write's `.<name>.<pid>.tmp`


def _remove_stale_temp_files(out: Path) -> None:
    """Delete the temp files a killed run left (shards, journal, manifest). Called when a run starts: one
    ingest per output folder at a time (as for the journal), so any temp file there is a leftover.
    (Not by the pid in the name: a killed worker may linger as a zombie, and pids are reused.)"""
    for folder in (out, out / shard_io.SHARD_DIR, out / JOURNAL):
        for path in folder.iterdir() if folder.is_dir() else []:
            if _TEMP_FILE.match(path.name) and path.is_file():
                path.unlink(missing_ok=True)


def _remove_stale_shards(out: Path, keep: set[str]) -> None:
    folder = out / shard_io.SHARD_DIR
    for path in folder.glob("shard-*.parquet") if folder.is_dir() else []:
        if f"{shard_io.SHARD_DIR}/{path.name}" not in keep:
            path.unlink()


def _save_manifest(path: Path, manifest: Manifest) -> None:
    """Write the manifest, unless an identical one (up to its creation time) is already there."""
    try:
        old = Manifest.load(path)
        if replace(old, created=manifest.created) == manifest:
            manifest.created = old.created
            return
    except DatasetError:
        pass
    manifest.save(path)
