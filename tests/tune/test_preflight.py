"""What a sweep checks before anything starts (issue #20 items 2-7, #14 items 4 and 8).

Each case goes through `ecg-tune sweep` (the CLI's `main`): exit 2, one stderr line naming the key or
flag, no traceback, and nothing left behind; `no_ray` fails the test if a sweep would start Ray.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ecg_tune.cli import main
from ecg_tune.errors import ConfigError, DatasetError
from ecg_tune.tune.spaces import check_name, parse_spec
from tests.tune.conftest import RayWouldStart, small_space, write_space


def _refused(capsys: pytest.CaptureFixture, args: list[str], needle: str) -> str:
    code = main(args)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert needle in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------------- names (item 5)
BAD_NAMES = ["../escape", "a/b", "/tmp/abs", "..", ".", "a\\b", "x/../../y", "", " ", "-flag", "a\nb"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_name_is_one_rule_for_yaml_and_flag(name: str, tmp_path: Path, small_shards: Path,
                                            capsys: pytest.CaptureFixture, no_ray: None) -> None:
    storage = tmp_path / "sweeps"
    with pytest.raises(ConfigError, match="^name: "):
        parse_spec(small_space(small_shards, name=name))
    with pytest.raises(ConfigError, match="^--name: "):
        check_name("--name", name)
    space = write_space(tmp_path / "s.yaml", small_space(small_shards))
    if name.strip():
        _refused(capsys, ["sweep", str(space), "--storage", str(storage), f"--name={name}"], "--name: ")
    assert not storage.exists() and not (tmp_path / "escape").exists() and not (tmp_path / "y").exists()


@pytest.mark.parametrize("name", ["paper-ptbxl", "quickstart-20261124-132330", "a.b_c+d", "X1"])
def test_good_names_pass(name: str) -> None:
    assert check_name("--name", name) == name


# ------------------------------------------------------------------------------------------- storage (item 7)
def test_storage_that_is_a_file_is_one_line(tmp_path: Path, small_shards: Path, capsys: pytest.CaptureFixture,
                                            no_ray: None) -> None:
    afile = tmp_path / "file"
    afile.write_text("x")
    space = write_space(tmp_path / "s.yaml", small_space(small_shards))
    _refused(capsys, ["sweep", str(space), "--storage", str(afile)], "is a file, not a folder")
    _refused(capsys, ["sweep", str(space), "--storage", str(afile / "below")], "which is a file")


# ------------------------------------------------------------------------------------------- tracking (item 3)
def test_unreachable_tracking_server_is_named_at_once(tmp_path: Path, small_shards: Path,
                                                      capsys: pytest.CaptureFixture, no_ray: None) -> None:
    space = write_space(tmp_path / "s.yaml", small_space(small_shards))
    start = time.monotonic()
    line = _refused(capsys, ["sweep", str(space), "--storage", str(tmp_path / "sweeps"),
                             "--tracking-uri", "http://user:secret@127.0.0.1:9/"], "--tracking-uri http://127.0.0.1:9/")
    assert time.monotonic() - start < 30
    assert "does not answer" in line and "drop --tracking-uri" in line and "secret" not in line
    assert not (tmp_path / "sweeps").exists()


def test_a_silent_tracking_server_times_out_quickly(tmp_path: Path, small_shards: Path, capsys: pytest.CaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch, no_ray: None) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)  # accepts connections (kernel backlog) and never answers
    port = server.getsockname()[1]
    monkeypatch.setenv("ECG_TUNE_CONNECT_TIMEOUT_S", "1")
    space = write_space(tmp_path / "s.yaml", small_space(small_shards))
    start = time.monotonic()
    try:
        _refused(capsys, ["sweep", str(space), "--storage", str(tmp_path / "sweeps"), "--tracking-uri",
                          f"http://127.0.0.1:{port}"], "does not answer within 1 s")
    finally:
        server.close()
    assert time.monotonic() - start < 20


def test_a_live_tracking_server_passes(tmp_path: Path, small_shards: Path, no_ray: None) -> None:
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args: Any) -> None:
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    space = write_space(tmp_path / "s.yaml", small_space(small_shards))
    try:
        with pytest.raises(RayWouldStart):
            main(["sweep", str(space), "--storage", str(tmp_path / "sweeps"),
                  "--tracking-uri", f"http://127.0.0.1:{httpd.server_port}"])
    finally:
        httpd.shutdown()


# ------------------------------------------------------------------------------------------- storages (item 4)
@pytest.mark.parametrize("url", ["sqlite:////nonexistent-dir/x/optuna.db", "postgresql+psycopg2://nobody@127.0.0.1:9/db",
                                 "notadb://x"])
def test_bad_optuna_storage_fails_first_and_leaves_nothing(url: str, tmp_path: Path, small_shards: Path,
                                                           capsys: pytest.CaptureFixture, no_ray: None) -> None:
    space = write_space(tmp_path / "s.yaml", small_space(small_shards))
    storage = tmp_path / "sweeps"
    _refused(capsys, ["sweep", str(space), "--storage", str(storage), "--optuna-storage", url],
             "cannot use this Optuna storage")
    assert not storage.exists()


def test_a_start_that_fails_after_the_folder_exists_leaves_nothing(tmp_path: Path, small_shards: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import ecg_tune.tune.sweep as sweep_module

    monkeypatch.setattr(sweep_module, "_init_ray", lambda *a, **k: None)

    def broken_tuner(*args: Any, **kwargs: Any) -> None:
        raise DatasetError("simulated failure while building the tuner")

    monkeypatch.setattr(sweep_module, "_tuner", broken_tuner)
    space = write_space(tmp_path / "s.yaml", small_space(small_shards))
    storage = tmp_path / "sweeps"
    with pytest.raises(DatasetError, match="simulated"):
        sweep_module.run_sweep(str(space), storage=str(storage))
    assert not (storage / "small").exists()  # so the next start is not told "already exists"


# ------------------------------------------------------------------------------------------- budgets (item 6)
@pytest.mark.parametrize(("budget", "key"), [
    ({"trials": 1_000_000_000}, "budget.trials"), ({"max_concurrent": 1_000_000}, "budget.max_concurrent"),
    ({"max_epochs": 10_000_000, "grace_period": 1}, "budget.max_epochs")])
def test_budgets_have_upper_bounds(budget: dict, key: str, small_shards: Path) -> None:
    doc = small_space(small_shards)
    doc["budget"] = {**doc["budget"], **budget}
    with pytest.raises(ConfigError, match=f"^{key}: .* above the limit"):
        parse_spec(doc)


def test_num_samples_has_the_same_bound(tmp_path: Path, small_shards: Path, capsys: pytest.CaptureFixture,
                                        no_ray: None) -> None:
    space = write_space(tmp_path / "s.yaml", small_space(small_shards))
    _refused(capsys, ["sweep", str(space), "--storage", str(tmp_path / "x"), "--num-samples", "1000000000"],
             "--num-samples: must be between 1 and 10000")


# ------------------------------------------------------------------------------------------- test fold (#14 item 4)
@pytest.mark.parametrize("metric", ["linear.test_auc", "test_auc", "noise.0.5.test_auc", "finetune.test_ci_low",
                                    "label-efficiency.0.1.test_auc", "linear.fold10_auc"])
def test_a_test_fold_metric_is_never_the_objective(metric: str, tmp_path: Path, small_shards: Path,
                                                   capsys: pytest.CaptureFixture, no_ray: None) -> None:
    doc = small_space(small_shards, objective={"metric": metric, "mode": "max"})
    with pytest.raises(ConfigError, match="^objective.metric: .*test fold"):
        parse_spec(doc)
    space = write_space(tmp_path / "s.yaml", doc)
    _refused(capsys, ["sweep", str(space), "--storage", str(tmp_path / "sweeps")], f"objective.metric: '{metric}'")


def test_a_spec_changed_in_python_is_checked_too(tmp_path: Path, small_shards: Path, no_ray: None) -> None:
    from ecg_tune.tune.sweep import run_sweep

    spec = parse_spec(small_space(small_shards))
    spec.objective.metric = "linear.test_auc"
    with pytest.raises(ConfigError, match="test fold"):
        run_sweep(spec, storage=str(tmp_path / "sweeps"))


@pytest.mark.parametrize("metric", ["probe_auc", "loss", "linear.val_auc"])
def test_validation_metrics_stay_allowed(metric: str, small_shards: Path) -> None:
    parse_spec(small_space(small_shards, objective={"metric": metric, "mode": "max"}))


# ------------------------------------------------------------------------------------------- data (item 2)
def test_batch_larger_than_usable_records_is_refused_before_ray(tmp_path: Path, small_shards: Path,
                                                                capsys: pytest.CaptureFixture, no_ray: None) -> None:
    doc = small_space(small_shards)
    doc["fixed"]["train.batch_size"] = 256  # 240 records, folds 9-10 excluded from pretraining
    space = write_space(tmp_path / "s.yaml", doc)
    line = _refused(capsys, ["sweep", str(space), "--storage", str(tmp_path / "sweeps")], "fixed.train.batch_size: 256")
    assert "usable pretraining records" in line


def test_the_largest_sampled_batch_is_checked(tmp_path: Path, small_shards: Path, capsys: pytest.CaptureFixture,
                                              no_ray: None) -> None:
    doc = small_space(small_shards)
    del doc["fixed"]["train.batch_size"]
    doc["space"]["train.batch_size"] = {"choice": [16, 512]}
    space = write_space(tmp_path / "s.yaml", doc)
    _refused(capsys, ["sweep", str(space), "--storage", str(tmp_path / "sweeps")], "space.train.batch_size: 512")


def test_missing_label_set_is_refused_before_ray(tmp_path: Path, small_shards: Path, capsys: pytest.CaptureFixture,
                                                 no_ray: None) -> None:
    doc = small_space(small_shards)
    doc["fixed"]["data.label_set"] = "rhythm"
    space = write_space(tmp_path / "s.yaml", doc)
    _refused(capsys, ["sweep", str(space), "--storage", str(tmp_path / "sweeps")], "fixed.data.label_set: ")


def test_a_valid_space_reaches_ray(tmp_path: Path, small_shards: Path, no_ray: None) -> None:
    space = write_space(tmp_path / "s.yaml", small_space(small_shards))
    with pytest.raises(RayWouldStart):
        main(["sweep", str(space), "--storage", str(tmp_path / "sweeps")])


# ------------------------------------------------------------------------------------------- digests (#14 item 8)
def test_resume_refuses_data_that_changed_since_the_sweep_started(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                 no_ray: None) -> None:
    from types import SimpleNamespace

    from ecg_tune.data import open_dataset
    from ecg_tune.data.synthetic import write_synthetic
    from ecg_tune.tune.preflight import dataset_digests
    from ecg_tune.tune.sweep import SweepSettings

    data = tmp_path / "data"
    write_synthetic(data, n_records=60, seed=0)
    sweep_dir = tmp_path / "sweeps" / "small"
    sweep_dir.mkdir(parents=True)
    write_space(sweep_dir / "sweep.yaml", small_space(data))
    digests = dataset_digests(SimpleNamespace(datasets={str(data): open_dataset(data)}))
    assert list(digests) == [str(data)] and len(digests[str(data)]) == 64
    SweepSettings(name="small", sweep_dir=str(sweep_dir), tracking_uri="sqlite:///x.db", experiment_id="1",
                  parent_run_id="r", dataset_paths=[str(data)], dataset_digests=digests).save()
    with pytest.raises(RayWouldStart):  # unchanged data: resume goes ahead
        main(["resume", str(sweep_dir)])
    write_synthetic(data, n_records=60, seed=1)  # other records prepared into the same folder
    line = _refused(capsys, ["resume", str(sweep_dir)], f"{data}: this dataset changed since sweep 'small' started")
    assert "start a new sweep" in line
