"""The ingest journal `<out>/.ingest/`: settings, finished pieces (int16 data + rows) and finished
shards (sha256), which make `ingest` resumable (see `ecg_tune.data.ingest`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ecg_tune.data import shards as shard_io

JOURNAL = ".ingest"


class Journal:
    """The `.ingest/` folder: settings, finished pieces (data + rows) and finished shards (sha256)."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.dir = self.out / JOURNAL

    @classmethod
    def start(cls, out: Path, settings: dict[str, Any], resume: bool = True) -> Journal:
        """The journal of `out`, emptied first unless it was written with exactly these settings."""
        journal = cls(out)
        settings_file = journal.dir / "settings.json"
        text = json.dumps(settings, sort_keys=True, indent=1, default=str)
        if not resume or not settings_file.is_file() or settings_file.read_text() != text:
            shutil.rmtree(journal.dir, ignore_errors=True)
            journal.dir.mkdir(parents=True)
            shard_io.atomic_write(settings_file, text.encode())
        return journal

    def piece_json(self, shard: int, piece: int) -> Path:
        return self.dir / f"piece-{shard:05d}-{piece:03d}.json"

    def piece_bin(self, shard: int, piece: int) -> Path:
        return self.dir / f"piece-{shard:05d}-{piece:03d}.bin"

    def shard_json(self, shard: int) -> Path:
        return self.dir / f"shard-{shard:05d}.json"

    def save_piece(self, shard: int, piece: int, rows: list, data: np.ndarray, quarantine: list) -> None:
        payload = np.ascontiguousarray(data, dtype="<i2").tobytes()
        shard_io.atomic_write(self.piece_bin(shard, piece), payload)
        meta = {"rows": rows, "quarantine": quarantine, "bytes": len(payload)}
        shard_io.atomic_write(self.piece_json(shard, piece), json.dumps(meta).encode())  # written last: "done"

    def piece_meta(self, shard: int, piece: int) -> dict[str, Any] | None:
        try:
            return json.loads(self.piece_json(shard, piece).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def piece_ready(self, shard: int, piece: int) -> bool:
        """Rows and data both present (what writing the shard needs)."""
        meta = self.piece_meta(shard, piece)
        data = self.piece_bin(shard, piece)
        return meta is not None and data.is_file() and data.stat().st_size == meta["bytes"]

    def piece_data(self, shard: int, piece: int, n_leads: int) -> np.ndarray:
        return np.fromfile(self.piece_bin(shard, piece), dtype="<i2").reshape(-1, n_leads)

    def shard_entry(self, shard: int) -> dict[str, Any] | None:
        try:
            return json.loads(self.shard_json(shard).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
