"""A node-local cache of shard files for streaming: remote shards are copied once, later epochs read disk,
and every streamed shard (local or remote) is decoded once into raw int16 so that later epochs skip zstd.

Decoded files (`<root>/<sha[:2]>/<sha>.i16le`) hold the shard's `signal` column back to back: int16
little-endian, (samples, leads) row-major, records in row order, nothing else (record boundaries come
from the manifest's `n_samples`); a reader memory-maps the rows of one row group and copies out only
its windows. Their size is checked against the manifest on every open. Files are keyed by their sha256 from the manifest (`<root>/<sha[:2]>/<sha>.parquet`), so two datasets
that share a shard share the copy and a changed shard is never served stale. A copy is written to a
temporary name in the same folder, hashed while it is written, checked against the manifest and only
then renamed into place (`os.replace`): a reader sees a complete, verified file or none. Two workers
that miss at once both copy; the second rename replaces an identical file. Nothing but shard bytes is
written here (no URIs with credentials, no configuration). There is no eviction: size the folder for
the corpus (the int16 size that `data.mode: auto` reports, plus the shards' `du` for remote shards).
A full disk (or quota) raises `CacheFull`, on which a reader goes on without the cache.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pyarrow.fs as pafs

from ecg_tune.errors import DatasetError

_BLOCK = 2**22
_FULL = (errno.ENOSPC, errno.EDQUOT)


class CacheFull(DatasetError):
    """The cache's disk or quota is full (nothing partial is left behind): read without the cache."""


def _write_error(what: str, root: Path, e: OSError) -> DatasetError:
    kind = CacheFull if e.errno in _FULL else DatasetError
    return kind(f"{what} {root} ({e})")


class ShardCache:
    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ShardCache({str(self.root)!r})"

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.parquet"

    def local(self, filesystem: pafs.FileSystem, path: str, sha256: str, where: str) -> Path:
        """The local copy of `path` in `filesystem` (copied and verified on first use).

        `where` is how errors name the shard (its URI).
        """
        dest = self.path_for(sha256)
        if dest.is_file():
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        digest = hashlib.sha256()
        try:
            try:
                with filesystem.open_input_stream(path) as src, open(tmp, "wb") as out:
                    while block := src.read(_BLOCK):
                        digest.update(block)
                        out.write(block)
                    out.flush()
                    os.fsync(out.fileno())
            except OSError as e:
                raise _write_error(f"{where}: cannot copy the shard into the cache", self.root, e) from None
            if digest.hexdigest() != sha256:
                raise DatasetError(f"{where}: sha256 does not match the manifest (corrupt or modified shard)")
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                tmp.unlink()
        return dest

    def decoded_path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.i16le"

    def decoded(self, sha256: str, nbytes: int, write: Callable[[BinaryIO], None], where: str) -> Path:
        """The decoded int16 file of shard `sha256` (`nbytes` long), made on first use by `write(file)`."""
        dest = self.decoded_path(sha256)
        try:
            if dest.stat().st_size == nbytes:
                return dest
        except FileNotFoundError:
            pass
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            try:
                with open(tmp, "wb") as out:
                    write(out)
                    out.flush()
                    os.fsync(out.fileno())
            except OSError as e:
                raise _write_error(f"{where}: cannot write the decoded shard into the cache", self.root, e) from None
            if tmp.stat().st_size != nbytes:
                raise DatasetError(f"{where}: decoded {tmp.stat().st_size} bytes, the manifest's n_samples say {nbytes}")
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                tmp.unlink()
        return dest
