"""Multi-worker trials inside sweeps (#17): `resources.workers` validation, and (slow) a real sweep
whose trials each train on two Ray Train workers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ecg_tune.errors import ConfigError
from tests.tune.conftest import error_key, spec_of


def test_workers_are_parsed_with_their_per_worker_resources() -> None:
    res = spec_of({"resources": {"workers": 2, "cpu_per_worker": 1, "gpu_per_worker": 0.5}}).resources
    assert (res.workers, res.cpu_per_worker, res.gpu_per_worker) == (2, 1.0, 0.5)
    assert res.per_trial() == {"CPU": 3.0, "GPU": 1.0}  # the driver's CPU and both workers
    assert spec_of({}).resources.workers == 1 and spec_of({}).resources.per_trial() == {"CPU": 1.0, "GPU": 0.0}


@pytest.mark.parametrize(("resources", "key", "says"), [
    ({"workers": 0}, "resources.workers", "at least 1"),
    ({"workers": 1.5}, "resources.workers", "integer"),
    ({"workers": "two"}, "resources.workers", "number"),
    ({"workers": 2, "cpu_per_worker": 0}, "resources.cpu_per_worker", "positive"),
    ({"workers": 2, "gpu_per_worker": 1.5}, "resources.gpu_per_worker", "whole number"),
    ({"workers": 2, "gpu_per_worker": -1}, "resources.gpu_per_worker", "fraction"),
    ({"workers": 2, "gpu": 1}, "resources.gpu", "gpu_per_worker"),
    ({"cpu_per_worker": 2}, "resources.cpu_per_worker", "workers > 1"),
    ({"workers": 2, "gpus_per_worker": 1}, "resources.gpus_per_worker", "unknown key"),
])
def test_bad_worker_resources_name_the_key(resources: dict, key: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as info:
        spec_of({"resources": resources})
    assert info.value.key == key


def test_pbt_with_several_workers_is_refused() -> None:
    from tests.tune.conftest import SEARCHER_SPEC as SPEC

    assert error_key({**SPEC, "scheduler": "pbt", "resources": {"workers": 2}}) == "resources.workers"
    assert spec_of({**SPEC, "scheduler": "pbt", "resources": {"workers": 1}}).resources.workers == 1


def _sweep_in_subprocess(tmp_path: Path, space: Path, num_cpus: int) -> tuple[int, str]:
    """`ecg-tune sweep` in a process of its own whose local Ray has `num_cpus` CPUs (each trial holds its
    driver's CPU and its workers': more than this 2-core machine has, so Ray is told so)."""
    script = tmp_path / "run_sweep.py"
    script.write_text(
        "import sys, ray\n"
        f"ray.init(address='local', num_cpus={num_cpus}, include_dashboard=False)\n"
        "from ecg_tune.cli import main\n"
        f"sys.exit(main(['sweep', {str(space)!r}, '--storage', {str(tmp_path / 'sweeps')!r}]))\n")
    return _run_script(script)


def _run_script(script: Path) -> tuple[int, str]:
    from tests.tune.conftest import ENV, finish

    log = script.with_suffix(".log")
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, str(script)], env=ENV, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    code = finish(proc, 600)
    return code, log.read_text(errors="replace")


@pytest.mark.slow
def test_sweep_trials_train_on_two_workers_each(tmp_path: Path) -> None:
    from ecg_tune.data.synthetic import write_synthetic
    from tests.tune.conftest import events, tiny_doc, write_yaml

    data = tmp_path / "data"
    write_synthetic(data, n_records=160, seed=0)
    doc = tiny_doc(data, name="mw", budget={"trials": 2, "max_epochs": 2, "max_concurrent": 2},
                   resources={"cpu": 1, "workers": 2, "cpu_per_worker": 1})
    doc["fixed"].update({"train.batch_size": 16, "train.steps_per_epoch": 2, "data.max_pretrain_records": 80})
    code, log = _sweep_in_subprocess(tmp_path, write_yaml(tmp_path / "space.yaml", doc), num_cpus=6)
    assert code == 0, log[-5000:]
    sweep_dir = tmp_path / "sweeps" / "mw"
    evs = events(sweep_dir)
    assert len(evs) == 2, evs
    for trial_id, rows in evs.items():
        starts = [e for e in rows if e["event"] == "start"]
        assert len(starts) == 1 and starts[0]["world_size"] == 2, rows  # written once, by rank 0 of 2
        results = [json.loads(line) for line in (sweep_dir / f"trial_{trial_id}" / "result.json").read_text().splitlines()]
        assert [r["epoch"] for r in results] == [1, 2]  # one result per epoch, not one per worker
        assert "linear.test_auc" in results[-1] and results[-1]["probe_auc"] == results[-1]["probe_auc"]  # not NaN
        assert (sweep_dir / "trials" / trial_id / "last.ckpt").is_file()


def _train_workers() -> list[int]:
    """PIDs of live Ray Train workers (their process title names the RayTrainWorker actor)."""
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if b"RayTrainWorker" in (proc / "cmdline").read_bytes():
                    out.append(int(proc.name))
            except OSError:
                pass
    return out


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_two_worker_trial_survives_a_worker_kill_and_a_driver_kill_and_resume(tmp_path: Path) -> None:
    """One trial on two workers: SIGKILL one of its Ray Train workers after its first epoch (the trial
    fails and Tune retries it from its checkpoint), then SIGKILL the sweep driver (and its Ray) after a
    later epoch and `resume`: the trial ends with every epoch reported, continued each time, not restarted."""
    import os
    import signal

    from ecg_tune.data.synthetic import write_synthetic
    from tests.tune.conftest import ENV, events, finish, kill_group, tiny_doc, wait_for, write_yaml

    data = tmp_path / "data"
    write_synthetic(data, n_records=160, seed=0)
    doc = tiny_doc(data, name="mwk", budget={"trials": 1, "max_epochs": 5, "max_concurrent": 1},
                   resources={"cpu": 1, "workers": 2, "cpu_per_worker": 1})
    doc["fixed"].update({"train.batch_size": 16, "train.steps_per_epoch": 4, "data.max_pretrain_records": 80})
    space = write_yaml(tmp_path / "space.yaml", doc)
    sweep_dir = tmp_path / "sweeps" / "mwk"

    def script(command: str) -> Path:
        path = tmp_path / f"{command}.py"
        target = str(space) if command == "sweep" else str(sweep_dir)
        extra = f", '--storage', {str(tmp_path / 'sweeps')!r}" if command == "sweep" else ""
        path.write_text("import sys, ray\nray.init(address='local', num_cpus=6, include_dashboard=False)\n"
                        "from ecg_tune.cli import main\n"
                        f"sys.exit(main([{command!r}, {target!r}{extra}]))\n")
        return path

    def reported_epochs() -> list[int]:
        files = list(sweep_dir.glob("trial_*/result.json"))
        lines = files[0].read_text().splitlines() if files else []
        return [json.loads(line)["epoch"] for line in lines if line.strip()]

    log = tmp_path / "sweep.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, str(script("sweep"))], env=ENV, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: reported_epochs()[-1:] >= [1], 400, "the first epoch", proc)
        workers = wait_for(_train_workers, 60, "a Ray Train worker", proc)
        os.kill(workers[0], signal.SIGKILL)
        wait_for(lambda: len([e for evs in events(sweep_dir).values() for e in evs if e["event"] == "start"]) >= 2,
                 300, "the trial to start again after the worker kill", proc)
        wait_for(lambda: reported_epochs()[-1:] >= [3], 400, "a later epoch", proc)
        kill_group(proc)
    finally:
        finish(proc, 60)
    with open(log, "ab") as out:
        resumed = subprocess.Popen([sys.executable, str(script("resume"))], env=ENV, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    code = finish(resumed, 500)
    text = log.read_text(errors="replace")
    assert code == 0, text[-5000:]
    (rows,) = events(sweep_dir).values()
    starts = [e for e in rows if e["event"] == "start"]
    assert len(starts) >= 3 and all(e["world_size"] == 2 for e in starts), rows
    assert all(e["epoch"] >= 1 for e in starts[1:]), "a retried or resumed trial continues, not restarts"
    epochs = reported_epochs()
    assert epochs[-1] == 5 and sorted(set(epochs)) == [1, 2, 3, 4, 5], epochs
    final = [json.loads(line) for line in next(sweep_dir.glob("trial_*/result.json")).read_text().splitlines()][-1]
    assert "linear.test_auc" in final
