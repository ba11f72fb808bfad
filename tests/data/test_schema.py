"""Manifests and shards are checked against a schema before anything is allocated (issue #20 item 8).

Each damaged dataset must give one `DatasetError` naming the file and the field, from `open_dataset`
and from `ecg-tune inspect` (one line, exit 2), never a MemoryError, KeyError or a wrong summary.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecg_tune.cli import main
from ecg_tune.data import open_dataset
from ecg_tune.data.dataset import summarize
from ecg_tune.data.schema import MAX_FS, check_manifest
from ecg_tune.errors import DatasetError
from tests.data.conftest import copy_dataset, edit_manifest, rewrite_shard, set_column


def _refused(dataset: Path, needle: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(DatasetError, match=needle):
        open_dataset(dataset)
    with pytest.raises(DatasetError, match=needle):
        summarize(dataset)
    code = main(["inspect", str(dataset)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


# ------------------------------------------------------------------------------------------- manifests
MANIFEST_CASES = [
    ("negative-fs", lambda m: m.update(fs=-100), "fs: sampling rate"),
    ("zero-fs", lambda m: m.update(fs=0), "fs: sampling rate"),
    ("text-fs", lambda m: m.update(fs="100"), "fs: sampling rate"),
    ("huge-fs", lambda m: m.update(fs=1e12), "fs: sampling rate"),
    ("lead-names-text", lambda m: m.update(lead_names="I,II,III"), "lead_names: expected a non-empty list"),
    ("lead-names-numbers", lambda m: m.update(lead_names=[1, 2]), "lead_names: expected"),
    ("lead-names-repeated", lambda m: m.update(lead_names=["I"] * 12), "lead_names: 12 names, 1 distinct"),
    ("n-records-text", lambda m: m.update(n_records="500"), "n_records: expected a non-negative integer"),
    ("n-records-wrong", lambda m: m.update(n_records=m["n_records"] + 1), "n_records: .* but the shards hold"),
    ("shard-file-escapes", lambda m: m["shards"][0].update(file="../../etc/passwd"), r"shards\[0\].file"),
    ("shard-rows-text", lambda m: m["shards"][0].update(rows="10"), r"shards\[0\].rows"),
    ("shard-sha-odd", lambda m: m["shards"][0].update(sha256="abc"), r"shards\[0\].sha256"),
    ("vocabulary-text", lambda m: m["label_sets"]["all"].update(vocabulary="A,B"), "label_sets.all.vocabulary"),
    ("default-set-missing", lambda m: m.update(default_label_set="rhythm"), "default_label_set: 'rhythm'"),
    ("normalization-short", lambda m: m["normalization"].update(mean=[0.0]), "normalization.mean"),
    ("units-negative", lambda m: m["signal_encoding"].update(units_per_mv=-1), "signal_encoding.units_per_mv"),
]


@pytest.mark.parametrize(("case", "change", "needle"), MANIFEST_CASES, ids=[c[0] for c in MANIFEST_CASES])
def test_bad_manifest_field_is_named(case, change, needle, tiny_dataset: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture) -> None:
    dataset = copy_dataset(tiny_dataset, tmp_path / "d")
    edit_manifest(dataset, change)
    _refused(dataset, f"manifest.json: {needle}", capsys)


def _manifest(tiny: Path) -> dict:
    return json.loads((tiny / "manifest.json").read_text())


@given(fs=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6), st.text(max_size=5),
                    st.booleans(), st.none()))
def test_fs_is_accepted_exactly_when_positive_finite_and_bounded(fs, tiny_dataset: Path) -> None:
    data = {**_manifest(tiny_dataset), "fs": fs}
    good = (isinstance(fs, int | float) and not isinstance(fs, bool) and math.isfinite(fs) and 0 < fs <= MAX_FS)
    if good:
        check_manifest(data, "m.json")
    else:
        with pytest.raises(DatasetError, match="^m.json: fs: "):
            check_manifest(data, "m.json")


# ------------------------------------------------------------------------------------------- shards
def _lie_about_length(value: int):
    def change(table: pa.Table) -> pa.Table:
        lengths = table.column("n_samples").to_pylist()
        return set_column(table, "n_samples", [value] + lengths[1:])
    return change


def test_huge_n_samples_is_refused_before_allocating(tiny_dataset: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    dataset = copy_dataset(tiny_dataset, tmp_path / "d")
    rewrite_shard(dataset, _lie_about_length(2**31 - 1))
    _refused(dataset, r"shard-00000.parquet: n_samples: values from .* to 2147483647", capsys)


def test_n_samples_beyond_the_stored_signal_is_refused_before_allocating(tiny_dataset: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    dataset = copy_dataset(tiny_dataset, tmp_path / "d")
    rewrite_shard(dataset, _lie_about_length(5_000_000))  # below the per-record bound, far above the data
    _refused(dataset, "n_samples: claims .* bytes of signal .* the signal column holds", capsys)


def test_n_samples_as_text_is_refused(tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dataset = copy_dataset(tiny_dataset, tmp_path / "d")
    rewrite_shard(dataset, lambda t: set_column(t, "n_samples", [str(v) for v in t.column("n_samples").to_pylist()],
                                                pa.string()))
    _refused(dataset, "n_samples: has type string, expected integer", capsys)


def test_a_shard_label_outside_the_vocabulary_is_named(tiny_dataset: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    dataset = copy_dataset(tiny_dataset, tmp_path / "d")
    column = "label_all"

    def change(table: pa.Table) -> pa.Table:
        labels = table.column(column).to_pylist()
        return set_column(table, column, [["=cmd|' /C calc'!A0"]] + labels[1:])

    rewrite_shard(dataset, change)
    _refused(dataset, "label_all: label\\(s\\) =cmd.* are not in the manifest's 'all' vocabulary", capsys)


def test_a_shard_fs_other_than_the_manifest_is_named(tiny_dataset: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    dataset = copy_dataset(tiny_dataset, tmp_path / "d")
    rewrite_shard(dataset, lambda t: set_column(t, "fs", [500.0] * t.num_rows))
    _refused(dataset, "fs: \\[500.0\\] Hz, the manifest says 100 Hz", capsys)


def test_an_intact_dataset_still_opens(tiny_dataset: Path) -> None:
    assert len(open_dataset(tiny_dataset)) == 40
