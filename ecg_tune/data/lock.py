"""One ingest per output folder, and only of the corpus already there.

`claim_output(out, identity)` is held for the whole of an ingest:

- an exclusive `fcntl.flock` on `<out>/.ingest.lock` (the kernel drops it when the holder exits, even
  on SIGKILL, so a crashed run never leaves a stale lock); a second ingest into the same folder is
  refused at once with the folder and the holder's pid, host, command and start time, instead of
  both writing and one deleting the other's shards;
- a check that the folder is empty, or holds a dataset (or an unfinished ingest journal) of the same
  corpus: same source reader and, where the journal records it, the same corpus folder. Resuming or
  re-running the same ingest still works; another corpus, or files that are no shard dataset, are
  refused instead of silently replaced.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ecg_tune.data.journal import JOURNAL
from ecg_tune.data.manifest import MANIFEST
from ecg_tune.data.shards import SHARD_DIR
from ecg_tune.errors import DatasetError

LOCK_FILE = ".ingest.lock"
_OURS = {LOCK_FILE, MANIFEST, SHARD_DIR, JOURNAL}


@contextlib.contextmanager
def claim_output(out: Path, source: str, root: str | None = None) -> Iterator[None]:
    """Hold `out` exclusively for an ingest of `source` (from the corpus folder `root`, if any)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out}: output path is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    with _exclusive(out):
        check_same_corpus(out, source, root)
        yield


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    path = out / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DatasetError(f"{out}: another ingest is writing into this folder ({_holder(path)}); "
                               "wait for it to finish, or prepare into another folder") from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)[:500],
                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


def _holder(path: Path) -> str:
    try:
        h = json.loads(path.read_text())
        return f"pid {h['pid']} on {h['host']} since {h['started']}: {h['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


def folder_identity(out: Path) -> dict[str, Any] | None:
    """{"source", "root"?} of the dataset or unfinished ingest in `out`, or None if it holds neither."""
    try:
        settings = json.loads((out / JOURNAL / "settings.json").read_text())
        if isinstance(settings, dict):
            if "write_dataset" in settings:
                return {"source": str(settings["write_dataset"])}
            if "source" in settings:
                return {"source": str(settings["source"]), "root": settings.get("root")}
    except (OSError, ValueError):
        pass
    try:
        manifest = json.loads((out / MANIFEST).read_text())
        if isinstance(manifest, dict) and isinstance(manifest.get("source"), str):
            return {"source": manifest["source"]}
    except (OSError, ValueError):
        pass
    return None


def check_same_corpus(out: Path, source: str, root: str | None = None) -> None:
    """Refuse a non-empty `out` that holds another corpus (or anything that is not a shard dataset)."""
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not [e for e in entries if e != LOCK_FILE]:
        return
    found = folder_identity(out)
    if found is None:
        foreign = [e for e in entries if e not in _OURS][:3]
        if not foreign and not (out / MANIFEST).exists():
            return  # only leftovers of an ingest killed before it wrote its journal settings
        raise DatasetError(f"{out}: output folder is not empty and holds no ecg-tune dataset "
                           f"({', '.join(foreign or entries[:3])} ...); prepare into an empty or new folder")
    if found["source"] != source:
        raise DatasetError(f"{out}: output folder already holds a {found['source']!r} dataset; preparing "
                           f"{source!r} into it would replace it (and break sweeps that use it): prepare into "
                           "another folder, or delete this one first")
    if root is not None and found.get("root") and str(found["root"]) != str(root):
        raise DatasetError(f"{out}: output folder already holds the {source!r} dataset of {found['root']}, not of "
                           f"{root}: prepare into another folder, or delete this one first")
