"""What a finished ingest should tell the user loudly: a dataset that is not what they think it is.

- no record carries a label (e.g. `prepare cinc` on a folder whose headers have no `#Dx` lines): the
  dataset is usable for pretraining only, and every downstream protocol would fail or mean nothing;
- records stored at a higher rate than they were recorded at (`--fs 500` on 100 Hz files): the
  upsampled signal holds no information above the original Nyquist frequency.

Each becomes a warning on the `ecg_tune.data` logger (the CLI prints it as
`ecg-tune prepare: warning: ...`) and is returned, so that callers and tests can act on it.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from ecg_tune.data.manifest import Manifest

log = logging.getLogger("ecg_tune.data.ingest")


def warn_about(manifest: Manifest, rows: list[list[dict[str, Any]]], target: Any, out: Path) -> list[str]:
    flat = [r for shard_rows in rows for r in shard_rows]
    warnings = []
    labelled = sum(1 for r in flat if any(r.get("labels", {}).values()))
    if flat and labelled == 0:
        warnings.append(
            f"{out}: 0 labelled records of {len(flat)} ({manifest.source}): no record has a label in any label set "
            f"({', '.join(sorted(manifest.label_sets)) or 'none found'}); is this the right corpus folder? The "
            "dataset can be used for pretraining only, not as a downstream dataset")
    upsampled = Counter(float(r["source_fs"]) for r in flat if r.get("source_fs") and float(r["source_fs"]) < target.fs)
    if upsampled:
        rates = ", ".join(f"{n} at {fs:g} Hz" for fs, n in sorted(upsampled.items()))
        warnings.append(
            f"{out}: {sum(upsampled.values())} record(s) upsampled to {target.fs:g} Hz ({rates}): upsampling adds no "
            f"information above the original rate's Nyquist frequency; use --fs {min(upsampled):g} (or lower) unless "
            "you need every dataset at one rate")
    for text in warnings:
        log.warning(text)
    return warnings
