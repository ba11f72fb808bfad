"""`ecg-tune prepare` killed with SIGKILL while it reads and while it writes shards, then re-run.

The real PTB-XL sample (500 records) is ingested at 500 Hz with 20 records per shard, so there are 25
shards of ~1.6 MB each and a write phase long enough to kill mid-write. A seeded schedule kills the
whole process group (CLI + worker processes) at moments chosen from what is on disk: after some
pieces were read, and while a shard's temp file is being written (shards are written while other
pieces are still being read). After every kill no file under
`shards/` may be anything but a complete shard, byte-identical to the uninterrupted run's (or a
temp file, which the next run must delete), and there is no manifest. The last run, uninterrupted,
must finish with exactly the shards and manifest of an uninterrupted run and no temp files.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SEED = 20240611
TEMP = re.compile(r"^\.(.+)\.(\d+)\.tmp$")


def prepare_cmd(root: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "ecg_tune.cli", "prepare", "ptbxl", str(root), str(out),
            "--records-per-shard", "20", "--workers", "2", "--fs", "500"]


def run_to_end(root: Path, out: Path) -> None:
    done = subprocess.run(prepare_cmd(root, out), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def shard_digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "shards").glob("*.parquet"))}


def run_and_kill(root: Path, out: Path, trigger: Callable[[], bool], deadline_s: float = 120) -> dict:
    """Start prepare, SIGKILL its process group as soon as `trigger()` holds; what was seen at the kill."""
    proc = subprocess.Popen(prepare_cmd(root, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    killed = False
    try:
        deadline = time.monotonic() + deadline_s
        while proc.poll() is None and time.monotonic() < deadline:
            if trigger():
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.001)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
        proc.stderr.close()
    return {"killed": killed, "returncode": proc.returncode}


def listing(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []


def check_after_kill(out: Path, reference: dict[str, str]) -> list[str]:
    """Every shard on disk is complete (identical to the reference); anything else is a temp file."""
    temps = []
    for name in listing(out / "shards"):
        path = out / "shards" / name
        if name.endswith(".parquet"):
            assert name in reference, f"unexpected shard {name}"
            pq.read_metadata(path)  # a valid Parquet footer
            assert hashlib.sha256(path.read_bytes()).hexdigest() == reference[name], f"{name} is incomplete or differs"
        else:
            assert TEMP.match(name), f"{name} is neither a shard nor a temp file"
            temps.append(name)
    assert not (out / "manifest.json").exists(), "a manifest before every shard was written"
    return temps


def test_killed_prepare_leaves_no_partial_shard_and_rerun_matches(ptbxl_root: Path, tmp_path: Path) -> None:
    ref, out = tmp_path / "reference", tmp_path / "victim"
    run_to_end(ptbxl_root, ref)
    reference = shard_digests(ref)
    assert len(reference) == 25

    rng = random.Random(SEED)
    journal = out / ".ingest"

    def pieces_read_at_least(n: int) -> Callable[[], bool]:
        return lambda: sum(name.startswith("piece-") and name.endswith(".json") for name in listing(journal)) >= n

    def writing_shard_after(n: int) -> Callable[[], bool]:
        def trigger() -> bool:
            names = listing(out / "shards")
            done = sum(name.endswith(".parquet") for name in names)
            return done >= n and any(name.startswith(".shard-") and name.endswith(".tmp") for name in names)
        return trigger

    # 1. While reading: some pieces in the journal, and the shards written from them so far (a shard is
    # written as soon as its pieces are read) complete.
    outcome = run_and_kill(ptbxl_root, out, pieces_read_at_least(rng.randint(3, 15)))
    assert outcome["killed"], "prepare finished before the first kill"
    check_after_kill(out, reference)
    assert len(shard_digests(out)) < len(reference)

    # 2. While writing shards, until a kill lands mid-write (a temp shard left behind), at most 8 tries.
    left_temps: list[str] = []
    kills = 1
    for _ in range(8):
        written = len(shard_digests(out))
        if written >= 22:
            break
        outcome = run_and_kill(ptbxl_root, out, writing_shard_after(rng.randint(written, min(written + 6, 22))))
        if not outcome["killed"]:
            break
        kills += 1
        temps = check_after_kill(out, reference)
        left_temps += temps
        if temps and kills >= 3:
            break
    assert kills >= 3, "too few kills landed"
    assert left_temps, "no kill landed in the middle of a shard write"

    # 3. The re-run finishes the job: the same shards and manifest as an uninterrupted run, no temp files.
    run_to_end(ptbxl_root, out)
    assert shard_digests(out) == reference
    ours, theirs = json.loads((out / "manifest.json").read_text()), json.loads((ref / "manifest.json").read_text())
    assert {**ours, "created": None} == {**theirs, "created": None}
    leftovers = [str(p.relative_to(out)) for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == [], f"temp files of killed runs are still there: {leftovers}"
    assert not list(journal.glob("piece-*.bin")), "piece data of finished shards are still in the journal"
