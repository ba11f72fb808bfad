"""A trial that raises a domain error inside Ray: the sweep's output and the trial's MLflow run carry
the original message, and a sweep whose first trials all fail the same way stops, saying why
(issue #20 items 2 and 6).

Ray copies and pickles the exception on its way to the driver; `ConfigError` used to arrive as
`TypeError: ConfigError.__init__() missing 1 required positional argument: 'reason'`. The batch-size
check of `preflight.check_data` (which now refuses this space before Ray starts) is switched off
here, so that the error happens where it used to: in the trial.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecg_tune.cli import main
from tests.tune.conftest import small_space, write_space

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MESSAGE = "train.batch_size: 256 is larger than the"


def test_config_error_in_a_trial_reaches_the_output_and_mlflow(tmp_path: Path, small_shards: Path,
                                                                capfd: pytest.CaptureFixture,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import ray
    from mlflow.tracking import MlflowClient

    from ecg_tune.tune import preflight

    monkeypatch.setattr(preflight, "check_data", lambda spec, datasets: None)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    doc = small_space(small_shards, name="failing")
    doc["fixed"]["train.batch_size"] = 256
    doc["budget"] = {**doc["budget"], "trials": 8, "max_concurrent": 1}
    space = write_space(tmp_path / "s.yaml", doc)
    storage = tmp_path / "sweeps"
    try:
        code = main(["sweep", str(space), "--storage", str(storage)])
    finally:
        ray.shutdown()
    out, err = capfd.readouterr()
    assert code == 1
    assert "missing 1 required positional argument" not in out + err
    failed = [line for line in err.splitlines() if line.startswith("trial ") and " failed: " in line]
    assert failed and all(MESSAGE in line for line in failed), err[-3000:]
    assert "stopped: the first 3 trials all failed with the same error" in err and MESSAGE in err

    sweep_dir = storage / "failing"
    settings = json.loads((sweep_dir / "ecg_tune_sweep.json").read_text())
    client = MlflowClient(settings["tracking_uri"])
    runs = client.search_runs([settings["experiment_id"]], max_results=100)
    trials = [r for r in runs if r.data.tags.get("ecg_tune.role") == "trial"]
    assert 3 <= len(trials) < 8, "the sweep went on after its first 3 trials failed the same way"
    errored = [r for r in trials if r.data.tags.get("ecg_tune.state") == "error"]
    assert len(errored) >= 3
    for run in errored:
        assert run.info.status == "FAILED"
        assert MESSAGE in run.data.tags["ecg_tune.failure_reason"]
