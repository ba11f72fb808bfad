"""A failed `ecg-tune pretrain` leaves no empty --out folder behind, and removes only what it created
(issue #14 item 8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecg_tune.cli import main


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ecg_tune.data.synthetic import write_synthetic

    out = tmp_path_factory.mktemp("synthetic") / "data"
    write_synthetic(out, n_records=60, seed=0)
    return out


def _fail(shards: Path, out: Path, capsys: pytest.CaptureFixture) -> str:
    code = main(["pretrain", "--data", str(shards), "--method", "simclr", "--encoder", "xresnet1d50",
                 "--batch-size", "100000", "--epochs", "1", "--set", "encoder.width=8", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "train.batch_size" in err and "Traceback" not in err, err
    return err


def test_failed_pretrain_leaves_no_new_out_folder(shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _fail(shards, tmp_path / "new" / "deeper" / "run", capsys)
    assert not (tmp_path / "new").exists()


def test_failed_pretrain_keeps_a_folder_it_did_not_create(shards: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    _fail(shards, tmp_path / "mine" / "run", capsys)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    assert not (tmp_path / "mine" / "run").exists()
    _fail(shards, tmp_path / "mine", capsys)
    assert (tmp_path / "mine" / "notes.txt").is_file()
