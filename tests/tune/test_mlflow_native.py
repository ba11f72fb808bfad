"""MLflow as MLflow 3 means it (#18): a real small sweep, read back with MlflowClient, in MLflow's own
UI (headless Chromium) and through the README's loading snippet, verbatim."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
ENV.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A quickstart-like sweep (2 trials, 1 epoch) in `<root>/quickstart-output/sweeps/quickstart-test`."""
    import yaml

    from ecg_tune.data.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("qs")
    write_synthetic(root / "data", n_records=240, seed=0)
    space = {
        "name": "quickstart-test", "data": {"pretrain": [str(root / "data")], "downstream": str(root / "data")},
        "objective": {"metric": "probe_auc", "mode": "max"},
        "budget": {"trials": 2, "max_epochs": 1, "grace_period": 1, "max_concurrent": 2},
        "resources": {"cpu": 1}, "scheduler": "fifo", "searcher": {"sampler": "tpe", "seed": 0, "n_startup_trials": 2},
        "fixed": {"encoder.name": "xresnet1d50", "encoder.width": 8, "train.batch_size": 32, "evaluation.probe_epochs": 5,
                  "evaluation.protocols": "linear", "evaluation.linear_epochs": 2, "evaluation.bootstrap": 50},
        "space": {"method.name": {"choice": ["simclr", "byol"]}, "optim.lr": {"float": [1e-4, 1e-2], "log": True}},
    }
    (root / "space.yaml").write_text(yaml.safe_dump(space))
    done = subprocess.run([sys.executable, "-m", "ecg_tune.cli", "sweep", str(root / "space.yaml"), "--storage",
                           str(root / "quickstart-output" / "sweeps")], env=ENV, cwd=root, capture_output=True,
                          text=True, timeout=500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sweep_dir = root / "quickstart-output" / "sweeps" / "quickstart-test"
    return {"root": root, "dir": sweep_dir, "out": done.stdout,
            "settings": json.loads((sweep_dir / "ecg_tune_sweep.json").read_text())}


def test_mlflow_records_the_sweep_natively(sweep: dict) -> None:
    from mlflow.tracking import MlflowClient

    s = sweep["settings"]
    client = MlflowClient(s["tracking_uri"])
    exp = client.get_experiment(s["experiment_id"])
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # model training, not GenAI
    runs = client.search_runs([exp.experiment_id])
    trials = [r for r in runs if r.data.tags.get("ecg_tune.role") == "trial"]
    parent = next(r for r in runs if r.data.tags.get("ecg_tune.role") == "sweep")
    assert len(trials) == 2 and all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in trials)
    # One LoggedModel per trial (its encoder.ckpt + protocol results), source = the trial's run, metrics linked.
    models = [m for m in client.search_logged_models([exp.experiment_id]) if m.name.startswith("encoder-")]
    assert sorted(m.source_run_id for m in models) == sorted(r.info.run_id for r in trials)
    for m in models:
        assert str(m.status).endswith("READY") and m.tags["ecg_tune.trial_id"] in m.name
        assert {x.key for x in m.metrics} >= {"probe_auc", "linear.test_auc"}
        assert any(a.path == "encoder.ckpt" for a in client.list_logged_model_artifacts(m.model_id))
        run = client.get_run(m.source_run_id)
        assert m.model_id in [o.model_id for o in run.outputs.model_outputs]
    # The registered best: alias, description, tags, and its source run is the best trial's run.
    name = "quickstart-test-encoder"
    mv = client.get_model_version_by_alias(name, "champion")
    best_trial = parent.data.tags["ecg_tune.best_trial"]
    best_run = next(r for r in trials if r.data.tags["ecg_tune.trial_id"] == best_trial)
    assert mv.run_id == best_run.info.run_id and mv.tags["trial_run_id"] == mv.run_id
    assert mv.tags["trial"] == best_trial and best_trial in mv.description
    assert {"method", "encoder", "fs", "leads", "label_set", "dataset_digest.0"} <= set(mv.tags)
    assert mv.tags["leads"].split(",")[:2] == ["I", "II"] and mv.tags["label_set"] == "all"
    digest = next(iter(s["dataset_digests"].values()))
    assert mv.tags["dataset_digest.0"].endswith(digest)
    # Datasets are run inputs with their manifest digests and the pretraining exclusion list.
    (inp,) = parent.inputs.dataset_inputs
    tags = {t.key: t.value for t in inp.tags}
    assert tags["ecg_tune.manifest_sha256"] == digest and digest.startswith(inp.dataset.digest)
    assert tags["mlflow.data.context"] == "pretrain,downstream" and int(tags["ecg_tune.excluded_records"]) > 0
    excl = client.download_artifacts(parent.info.run_id, "inputs/pretraining_exclusions.json", str(sweep["root"]))
    assert len(next(iter(json.loads(Path(excl).read_text())["excluded"].values()))) == int(tags["ecg_tune.excluded_records"])
    assert f"export MLFLOW_TRACKING_URI={s['tracking_uri']}" in sweep["out"]


def _readme_snippet() -> tuple[str, str]:
    """The README's export line (bash) and loading snippet (python), verbatim."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("<!-- loading-snippet -->"):]
    bash = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    python = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    return bash, python


def test_the_readme_snippet_embeds_an_ecg_and_writes_nothing(sweep: dict, tmp_path: Path) -> None:
    bash, python = _readme_snippet()
    # The export line, run where `make quickstart` ran (the repo root), finds the sweep's store...
    got = subprocess.run(["bash", "-c", bash + '\necho "$MLFLOW_TRACKING_URI"'], cwd=sweep["root"], env=ENV,
                         capture_output=True, text=True, timeout=60)
    assert got.stdout.strip().splitlines()[-1] == sweep["settings"]["tracking_uri"], got.stderr
    # ...and the Python snippet, in a fresh interpreter in an empty folder, embeds an ECG and writes nothing there.
    cwd = tmp_path / "fresh"
    cwd.mkdir()
    done = subprocess.run([sys.executable, "-c", python], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**ENV, "MLFLOW_TRACKING_URI": sweep["settings"]["tracking_uri"]})
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"torch.Size\(\[1, \d+\]\)", done.stdout), done.stdout
    assert list(cwd.iterdir()) == []
    # Without the URI it fails with a clear error instead of creating ./mlflow.db.
    bare = subprocess.run([sys.executable, "-c", python], cwd=cwd, capture_output=True, text=True, timeout=300, env=ENV)
    assert bare.returncode != 0 and "MLFLOW_TRACKING_URI" in bare.stderr and list(cwd.iterdir()) == []


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _browse(browser: str, url: str, *, shot: Path | None = None) -> str:
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=25000"]
    if shot is not None:
        subprocess.run([*args, "--window-size=1600,1000", f"--screenshot={shot}", url], capture_output=True, timeout=180)
    dom = subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout
    text = re.sub(r"<script.*?</script>|<style.*?</style>|<[^>]+>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", text)


def test_mlflow_ui_opens_the_training_runs(sweep: dict, tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    s = sweep["settings"]
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", s["tracking_uri"],
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], cwd=tmp_path, env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    shots = REPO / "docs" if os.environ.get("ECG_TUNE_DOCS_SCREENSHOTS") else tmp_path
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(base + "/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "mlflow server did not start"
                time.sleep(1)
        # The URL the sweep prints (MLflow 3.17's UI chooses GenAI vs model training per browser, not per tag).
        page = f"{base}/#/experiments/{s['experiment_id']}?workflowType=machine_learning"
        assert f"/#/experiments/{s['experiment_id']}?workflowType=machine_learning" in sweep["out"]
        text = _browse(browser, page, shot=shots / "mlflow-experiment.png")
        assert "Run Name" in text and "sweep:quickstart-test" in text, text[:2000]
        assert "Detect Issues" not in text and "Token Usage" not in text  # not the GenAI overview
        from mlflow.tracking import MlflowClient

        mv = MlflowClient(s["tracking_uri"]).get_model_version_by_alias("quickstart-test-encoder", "champion")
        trial = _browse(browser, f"{base}/#/experiments/{s['experiment_id']}/runs/{mv.run_id}?workflowType=machine_learning",
                        shot=shots / "mlflow-trial.png")
        assert mv.tags["trial"] in trial
        model = _browse(browser, f"{base}/#/models/quickstart-test-encoder/versions/{mv.version}",
                        shot=shots / "mlflow-model.png")
        assert "champion" in model and mv.tags["trial"] in model, model[:2000]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
