"""One ingest per output folder, and only of the corpus already there (issue #20 item 1, #14 item 8).

Two real `ecg-tune prepare` processes into one folder used to both exit 0 with only the second's
shards left (the first's were deleted as "stale"); a CinC ingest into a PTB-XL dataset's folder
silently replaced it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ecg_tune.data import ingest, open_dataset, write_dataset
from ecg_tune.data.lock import LOCK_FILE, claim_output
from ecg_tune.data.record import RawRecord
from ecg_tune.errors import DatasetError


def prepare(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ecg_tune.cli", "prepare", *args, "--workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _holder(out: Path) -> dict | None:
    try:
        return json.loads((out / LOCK_FILE).read_text())
    except (OSError, ValueError):
        return None


@pytest.mark.timeout(300)
def test_two_prepare_processes_into_one_folder_one_refuses_the_other_completes(ptbxl_root, cinc_root, tmp_path):
    out = tmp_path / "data"
    first = prepare("ptbxl", str(ptbxl_root), str(out))
    try:
        deadline = time.monotonic() + 120
        while _holder(out) is None:  # the first holds the folder
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first ingest never took the folder"
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGSTOP)  # keep it mid-ingest however fast this machine is
        try:
            second = prepare("cinc", str(cinc_root), str(out))
            _, err = second.communicate(timeout=120)
        finally:
            os.kill(first.pid, signal.SIGCONT)
        assert second.returncode == 2
        line = err.strip()
        assert "\n" not in line and "Traceback" not in err
        assert str(out) in line and "another ingest is writing into this folder" in line
        assert f"pid {first.pid}" in line and "prepare ptbxl" in line
        out1, err1 = first.communicate(timeout=240)
        assert first.returncode == 0, err1
    finally:
        if first.poll() is None:
            first.kill()
    dataset = open_dataset(out)
    assert dataset.manifest.source == "ptbxl" and len(dataset) == 500
    assert dataset.manifest.n_records == 500


def test_prepare_of_another_corpus_into_a_dataset_folder_is_refused(ptbxl_root, cinc_root, tmp_path):
    out = tmp_path / "data"
    ingest("ptbxl", ptbxl_root, out, workers=1, progress=False)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in (out / "shards").iterdir())
    proc = prepare("cinc", str(cinc_root), str(out))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "Traceback" not in err
    assert "already holds a 'ptbxl' dataset" in err and str(out) in err
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (out / "shards").iterdir()) == before
    assert open_dataset(out).manifest.source == "ptbxl"
    # The same ingest again (resume / re-run) still works and rewrites nothing.
    again = ingest("ptbxl", ptbxl_root, out, workers=1, progress=False)
    assert again.n_records == 500
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (out / "shards").iterdir()) == before


def test_same_source_from_another_corpus_folder_is_refused(ptbxl_root, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(ptbxl_root, copy, ignore=shutil.ignore_patterns("records500"))
    out = tmp_path / "data"
    ingest("ptbxl", ptbxl_root, out, workers=1, progress=False)
    with pytest.raises(DatasetError, match="already holds the 'ptbxl' dataset of"):
        ingest("ptbxl", copy, out, workers=1, progress=False)


def test_a_folder_of_other_files_is_refused(ptbxl_root, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty and holds no ecg-tune dataset"):
        ingest("ptbxl", ptbxl_root, tmp_path, workers=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_FILE, "notes.txt"]


def _records(n: int, source: str = "synthetic") -> list[RawRecord]:
    import numpy as np

    rng = np.random.default_rng(0)
    return [RawRecord(record_id=f"r{i}", source=source, signal=rng.normal(size=(12, 300)), fs=100.0,
                      lead_names=("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"),
                      labels={"all": ["A"] if i % 2 else ["B"]}, patient_id=str(i)) for i in range(n)]


def test_write_dataset_takes_the_same_lock_and_check(tmp_path):
    write_dataset(_records(20), tmp_path / "a", source="synthetic", source_version="1", fs=100)
    write_dataset(_records(20), tmp_path / "a", source="synthetic", source_version="1", fs=100)  # regenerate: fine
    with pytest.raises(DatasetError, match="already holds a 'synthetic' dataset"):
        write_dataset(_records(20, "other"), tmp_path / "a", source="other", source_version="1", fs=100)
    with claim_output(tmp_path / "b", "synthetic"), pytest.raises(DatasetError, match="another ingest"):
        write_dataset(_records(20), tmp_path / "b", source="synthetic", source_version="1", fs=100)


def test_the_lock_is_released_when_its_holder_is_killed(tmp_path):
    code = ("import sys, time; from pathlib import Path; from ecg_tune.data.lock import claim_output\n"
            "with claim_output(Path(sys.argv[1]), 'synthetic'):\n    print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(DatasetError, match=f"pid {holder.pid}"):
        with claim_output(tmp_path, "synthetic"):
            pass
    holder.kill()
    holder.wait()
    with claim_output(tmp_path, "synthetic"):  # SIGKILL released it: no stale lock
        pass


def test_prepare_cinc_without_labels_warns_loudly(cinc_root, tmp_path):
    import shutil

    root = tmp_path / "cinc"
    shutil.copytree(cinc_root, root)
    for header in root.rglob("*.hea"):
        header.write_text("".join(line for line in header.read_text().splitlines(keepends=True) if "Dx" not in line))
    proc = prepare("cinc", str(root), str(tmp_path / "out"))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "ecg-tune prepare: warning:" in err and "0 labelled records of 70" in err
    assert "pretraining only" in err


def test_prepare_at_a_higher_rate_warns_that_it_upsamples(ptbxl_root, tmp_path):
    proc = prepare("ptbxl", str(ptbxl_root), str(tmp_path / "out"), "--fs", "500", "--resolution", "100")
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    assert "ecg-tune prepare: warning:" in err and "500 record(s) upsampled to 500 Hz (500 at 100 Hz)" in err
    assert "--fs 100" in err
