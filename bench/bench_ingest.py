"""Ingest: `ecg-tune prepare ptbxl` (WFDB → Parquet shards) vs a plain `wfdb.rdsamp` loop script.

Both run as subprocesses on the same records; the time is the whole process, from exec to exit
(interpreter start, imports, listing, reading, writing, and for `prepare` also the verification pass
and summary it prints at the end). Repetitions alternate between the two (A B, B A, ...) so drifting
machine load hits both alike; the table gives the median and the best of the repetitions, CPU seconds
of each process tree, and records/s/core (records/s divided by the cores the process may use: all
of them for `prepare`, one for the single-process loop).

The corpus is the PTB-XL sample replicated to `--records` records in a temporary folder (new
ecg_ids, .hea files rewritten for the new record names, ptbxl_database.csv extended), so that process
start-up does not dominate. The sample itself is only read.

    .venv/bin/python bench/bench_ingest.py [--records 5000] [--rounds 3] [--sample /work/shared/data/ptb-xl-sample]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

import pandas as pd
from _common import PYTHON, LoadSampler, bench_env, header, run_timed, table, verdict

DEFAULT_SAMPLE = "/work/shared/data/ptb-xl-sample"

BASELINE = """\
# The plain approach: read every record with wfdb.rdsamp, stack, np.save (the reference code's
# prepare step stores float32 arrays the same way).
import sys
import numpy as np
import pandas as pd
import wfdb

root, out = sys.argv[1], sys.argv[2]
df = pd.read_csv(f"{root}/ptbxl_database.csv", index_col="ecg_id")
signals = [wfdb.rdsamp(f"{root}/{name}")[0] for name in df.filename_lr]
np.save(out, np.stack(signals).astype(np.float32))
print(len(signals))
"""


def build_corpus(sample: Path, out: Path, n_records: int) -> Path:
    """Replicate the sample's 100 Hz records to n_records with fresh ecg_ids; returns the root."""
    db = pd.read_csv(sample / "ptbxl_database.csv")
    marker = out / f".complete-{n_records}"
    if marker.is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    shutil.copyfile(sample / "scp_statements.csv", out / "scp_statements.csv")
    rows = []
    for new_id in range(1, n_records + 1):
        row = db.iloc[(new_id - 1) % len(db)].copy()
        rep = (new_id - 1) // len(db)
        old_name = Path(row["filename_lr"])
        new_stem = f"{new_id:05d}_lr"
        folder = f"records100/{(new_id // 1000) * 1000:05d}"
        (out / folder).mkdir(parents=True, exist_ok=True)
        src_hea = sample / f"{old_name}.hea"
        text = src_hea.read_text().replace(old_name.name, new_stem)
        (out / folder / f"{new_stem}.hea").write_text(text)
        shutil.copyfile(sample / f"{old_name}.dat", out / folder / f"{new_stem}.dat")
        row["ecg_id"] = new_id
        if pd.notna(row["patient_id"]):
            row["patient_id"] = float(row["patient_id"]) + 100000 * rep  # replicas are other patients
        row["filename_lr"] = f"{folder}/{new_stem}"
        row["filename_hr"] = f"records500/{(new_id // 1000) * 1000:05d}/{new_id:05d}_hr"  # not read
        rows.append(row)
    pd.DataFrame(rows).to_csv(out / "ptbxl_database.csv", index=False)
    marker.touch()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sample", default=DEFAULT_SAMPLE)
    parser.add_argument("--workdir", default=None, help="where the corpus and outputs go (default: a /tmp folder)")
    parser.add_argument("--target", type=float, default=8.0)
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.gettempdir()) / "ecg-tune-bench-ingest"
    work.mkdir(parents=True, exist_ok=True)
    root = build_corpus(Path(args.sample), work / f"ptbxl-{args.records}", args.records)
    script = work / "rdsamp_loop.py"
    script.write_text(BASELINE)
    cores = len(os.sched_getaffinity(0))
    env = bench_env()

    def ours() -> tuple[float, float, float]:
        dest = work / "out-prepare"
        shutil.rmtree(dest, ignore_errors=True)
        wall, cpu, peak, _ = run_timed([PYTHON, "-m", "ecg_tune.cli", "prepare", "ptbxl", str(root), str(dest)], env=env)
        return wall, cpu, peak

    def plain() -> tuple[float, float, float]:
        dest = work / "out-rdsamp.npy"
        dest.unlink(missing_ok=True)
        wall, cpu, peak, _ = run_timed([PYTHON, str(script), str(root), str(dest)], env=env)
        return wall, cpu, peak

    header(f"Ingest: {args.records} PTB-XL records (100 Hz, format 16), whole process",
           f"corpus: the {args.sample} records replicated to {args.records} in {root}")
    results: dict[str, list[tuple[float, float, float]]] = {"ecg-tune prepare": [], "wfdb.rdsamp loop + np.save": []}
    fns = {"ecg-tune prepare": ours, "wfdb.rdsamp loop + np.save": plain}
    with LoadSampler() as load:
        for name in fns:  # warm-up: page cache, .pyc files
            fns[name]()
        for r in range(args.rounds):
            order = list(fns) if r % 2 == 0 else list(fns)[::-1]
            for name in order:
                results[name].append(fns[name]())
    rows = []
    med = {}
    for name, runs in results.items():
        walls = [w for w, _, _ in runs]
        cpus = [c for _, c, _ in runs]
        used = cores if name == "ecg-tune prepare" else 1
        m = statistics.median(walls)
        med[name] = (m, statistics.median(cpus))
        rows.append([
            name, f"{m:.2f}", f"{min(walls):.2f}", f"{statistics.median(cpus):.2f}",
            f"{args.records / m:,.0f}", f"{args.records / m / used:,.0f}",
            f"{args.records / statistics.median(cpus):,.0f}", f"{max(p for _, _, p in runs):.0f}",
        ])
    print(table(["variant", "wall s (median)", "wall s (best)", "CPU s (median)", "records/s",
                 "records/s/core", "records/CPU-s", "peak RSS MiB (largest process)"], rows))
    ratio = med["wfdb.rdsamp loop + np.save"][0] / med["ecg-tune prepare"][0]
    cpu_ratio = med["wfdb.rdsamp loop + np.save"][1] / med["ecg-tune prepare"][1]
    print()
    print(f"speed-up, wall (median/median): {ratio:.1f}x; per CPU second: {cpu_ratio:.1f}x; "
          f"target >= {args.target:g}x wall: {verdict(ratio >= args.target)}")
    print(load.summary())


if __name__ == "__main__":
    main()
