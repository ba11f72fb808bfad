"""Issue #18 B without Ray: several objectives with constraints, cost ledger and device-hour budget,
warm start from an earlier study, the progress line."""

from __future__ import annotations

import io
import json
import math
import pickle
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from ecg_tune.errors import ConfigError
from ecg_tune.tune import cost
from ecg_tune.tune.leaderboard import pareto_mask
from ecg_tune.tune.searcher import FULL_BUDGET_KEY, make_scheduler, make_searcher
from ecg_tune.tune.spaces import parse_spec

SPEC = {
    "name": "s",
    "data": {"pretrain": ["/d"], "downstream": "/d"},
    "budget": {"trials": 6, "max_epochs": 4, "grace_period": 1},
    "searcher": {"sampler": "tpe", "seed": 0, "n_startup_trials": 5},
    "space": {"method.name": {"branch": {"simclr": {"method.temperature": {"float": [0.1, 1.0]}}, "byol": {}}},
              "optim.lr": {"float": [1e-4, 1e-2], "log": True}},
}
MULTI = {"metric": ["probe_auc", "device_hours"], "mode": ["max", "min"], "constraints": {"params": {"max": 1000}}}


def test_single_objective_yaml_is_unchanged() -> None:
    obj = parse_spec(SPEC).objective
    assert (obj.metric, obj.mode, obj.multi, obj.metrics) == ("probe_auc", "max", False, ["probe_auc"])


def test_several_objectives_parse_in_both_forms_and_the_scheduler_uses_the_first() -> None:
    a = parse_spec({**SPEC, "objective": MULTI}).objective
    b = parse_spec({**SPEC, "objective": [{"metric": "probe_auc", "mode": "max"},
                                          {"metric": "device_hours", "mode": "min"}]}).objective
    assert a.metrics == b.metrics == ["probe_auc", "device_hours"] and a.modes == b.modes == ["max", "min"]
    assert a.constraints == {"params": ("max", 1000.0)}
    sched = make_scheduler(parse_spec({**SPEC, "objective": MULTI}))
    assert sched.metric == "probe_auc"


@pytest.mark.parametrize(("objective", "key"), [
    ({"metric": ["probe_auc", "linear.test_auc"], "mode": ["max", "max"]}, "objective.metric[1]"),
    ({"metric": ["probe_auc", "device_hours"], "mode": ["max"]}, "objective.mode"),
    ({"metric": "probe_auc", "constraints": {"test_auc": {"max": 1}}}, "objective.constraints.test_auc"),
    ({"metric": "probe_auc", "constraints": {"params": {"below": 1}}}, "objective.constraints.params"),
    ({"metric": ["probe_auc", "probe_auc"]}, "objective.metric"),
])
def test_bad_objectives_are_refused_naming_the_key(objective: dict, key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_spec({**SPEC, "objective": objective})
    assert exc.value.key == key


def test_several_objectives_need_a_sampler_that_can() -> None:
    with pytest.raises(ConfigError, match="cannot search several objectives"):
        parse_spec({**SPEC, "objective": MULTI, "searcher": {"sampler": "cmaes"}})
    with pytest.raises(ConfigError, match="budget.device_hours|needs a searched sweep"):
        parse_spec({**SPEC, "budget": {**SPEC["budget"], "device_hours": 1}, "scheduler": "pbt"})


def test_multi_objective_searcher_tells_values_and_honours_constraints() -> None:
    spec = parse_spec({**SPEC, "objective": MULTI, "searcher": {"sampler": "nsgaii", "seed": 0}})
    searcher = make_searcher(spec)
    for i, tid in enumerate("abcd"):
        searcher.suggest(tid)
        searcher.on_trial_result(tid, {"probe_auc": 0.5, "device_hours": 0.1, "epoch": 1})  # no intermediate values
        searcher.on_trial_complete(tid, {"probe_auc": 0.6 + i / 100, "device_hours": 0.1 * (i + 1), "params": 500.0 * i,
                                         "epoch": 4, FULL_BUDGET_KEY: 1.0})
    study = searcher.study
    assert [t.values for t in study.trials] == [[0.6, 0.1], [0.61, 0.2], [0.62, 0.30000000000000004], [0.63, 0.4]]
    assert [t.constraints for t in study.trials] == [{"params": v} for v in (-1000.0, -500.0, 0.0, 500.0)]  # <= 0: met
    pickle.loads(pickle.dumps(searcher))  # the constraints function travels with the searcher (resume)


def test_pareto_mask() -> None:
    rows = [(0.9, 2.0), (0.8, 1.0), (0.7, 3.0), (0.9, 2.5), (math.nan, 0.1)]
    assert pareto_mask(rows, ["max", "min"]) == [True, True, False, False, False]


def test_cost_meter_counts_on_from_a_checkpoint() -> None:
    import torch

    meter = cost.CostMeter(0.0, 2, {"wall_s": 3600.0, "cpu_s": 5.0})
    m = meter.metrics(torch.nn.Linear(3, 2))
    assert m["params"] == 8 and m["device_seconds"] >= 7200 and m["cpu_seconds"] >= 5 and m["peak_memory_mb"] > 0
    assert math.isclose(m["device_hours"], m["device_seconds"] / 3600)
    assert meter.carried()["wall_s"] >= 3600


def test_cost_meter_counts_every_worker_of_a_multi_worker_trial(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(cost.time, "monotonic", lambda: clock[0])
    one, three = cost.CostMeter(0.0, 2, workers=1), cost.CostMeter(0.0, 2, workers=3)
    gpu = cost.CostMeter(0.5, 4, workers=2)
    clock[0] += 60.0
    assert one.metrics()["device_seconds"] == 120.0  # 2 CPUs x 60 s
    assert three.metrics()["device_seconds"] == 360.0  # 3 workers x 2 CPUs x 60 s
    assert gpu.metrics()["device_seconds"] == 60.0  # 2 workers x half a GPU x 60 s


def test_device_hour_budget_stops_new_trials_and_survives_a_new_searcher(tmp_path: Path) -> None:
    spec = parse_spec({**SPEC, "budget": {**SPEC["budget"], "device_hours": 1.0}})
    searcher = make_searcher(spec, sweep_dir=str(tmp_path))
    assert isinstance(searcher.suggest("a"), dict)
    ledger = cost.make_ledger(str(tmp_path))
    ledger.on_trial_result(0, [], SimpleNamespace(trial_id="a"), {"device_seconds": 1800.0})
    assert isinstance(searcher.suggest("b"), dict)
    ledger.on_trial_result(0, [], SimpleNamespace(trial_id="b"), {"device_seconds": 1900.0})
    assert json.loads((tmp_path / "cost.json").read_text()) == {"a": 1800.0, "b": 1900.0}
    assert searcher.suggest("c") == searcher.FINISHED
    restored = pickle.loads(pickle.dumps(make_searcher(spec, sweep_dir=str(tmp_path))))  # a resumed driver
    assert restored.suggest("d") == restored.FINISHED


def _old_sweep(tmp: Path, n: int = 30) -> Path:
    """A finished sweep folder (settings, sweep.yaml, SQLite study) whose study has converged on lr=1e-3."""
    import yaml

    from ecg_tune.tune.sweep import SweepSettings

    folder = tmp / "old"
    folder.mkdir()
    doc = {**SPEC, "name": "old", "space": {"optim.lr": {"float": [1e-4, 1e-2], "log": True},
                                            "optim.grad_clip": {"float": [0.0, 0.1]}}}
    (folder / "sweep.yaml").write_text(yaml.safe_dump(doc))
    url = f"sqlite:///{folder / 'optuna.db'}"
    SweepSettings(name="old", sweep_dir=str(folder), tracking_uri="", experiment_id="", parent_run_id="",
                  dataset_paths=[], optuna_storage=url).save()
    study = optuna.create_study(study_name="old", storage=url, direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5))
    for i in range(n):
        t = study.ask()
        lr = t.suggest_float("optim.lr", 1e-4, 1e-2, log=True)
        t.suggest_float("optim.grad_clip", 0.0, 0.1)
        if i % 5 == 4:
            t.report(0.1, 1)
            study.tell(t, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(t, 1.0 - (math.log10(lr) + 3) ** 2)
    return folder


def test_warm_start_adds_the_old_trials_and_skips_tpe_startup(tmp_path: Path) -> None:
    from ecg_tune.tune.warmstart import seed_study

    old = _old_sweep(tmp_path)
    wider = {**SPEC, "space": {"optim.lr": {"float": [1e-5, 1e-1], "log": True},
                               "optim.weight_decay": {"float": [0.0, 0.2]}}}
    spec = parse_spec({**wider, "searcher": {"sampler": "tpe", "seed": 1, "n_startup_trials": 10}})
    with pytest.raises(ConfigError, match="optim.grad_clip"):  # unknown keys are refused ...
        seed_study(make_searcher(spec).study, spec, old, {})
    searcher = make_searcher(spec, storage_url=f"sqlite:///{tmp_path / 'new.db'}")
    added = seed_study(searcher.study, spec, old, {"optim.grad_clip": "optim.weight_decay"})  # ... or mapped
    trials = searcher.study.get_trials(deepcopy=False)
    assert added == len(trials) == 30
    assert sum(bool(t.user_attrs.get("warm.stopped")) for t in trials) == 6
    assert {t.state.name for t in trials if t.user_attrs.get("warm.stopped")} == {"PRUNED"}
    # TPE's startup (random draws) is skipped: the warm trials count as its n_startup_trials ...
    sampler = searcher.study.sampler
    random_draws = []
    draw = sampler._random_sampler.sample_independent
    sampler._random_sampler.sample_independent = lambda *a, **k: random_draws.append(a[2]) or draw(*a, **k)
    lrs = [searcher.suggest(f"n{i}")["optim.lr"] for i in range(8)]
    assert random_draws == []
    assert len(set(lrs)) == 8
    # (the same instrument on a fresh study of the same space sees the random startup draws)
    fresh = make_searcher(spec)
    fresh_draws = []
    fdraw = fresh.study.sampler._random_sampler.sample_independent
    fresh.study.sampler._random_sampler.sample_independent = lambda *a, **k: fresh_draws.append(a[2]) or fdraw(*a, **k)
    fresh.suggest("f0")
    assert "optim.lr" in fresh_draws


def test_progress_line_without_ansi_codes_off_a_terminal() -> None:
    from ecg_tune.tune.progress import ProgressView

    out = io.StringIO()
    view = ProgressView("probe_auc", "max", 4, stream=out)
    trials = [SimpleNamespace(trial_id=t, status="RUNNING", last_result={}) for t in "ab"]
    view.on_trial_start(0, trials, trials[0])
    view.on_trial_result(0, trials, trials[0], {"probe_auc": 0.7, "device_seconds": 36.0})
    trials[0].status, trials[0].last_result = "TERMINATED", {"budget_complete": 1.0}
    view.on_trial_complete(0, trials, trials[0])
    trials[1].status = "TERMINATED"
    view.on_trial_complete(0, trials, trials[1])
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text
    last = text.strip().splitlines()[-1]
    assert "trials 2/4" in last and "finished 1" in last and "stopped 1" in last and "best probe_auc 0.7" in last
    assert "ETA" in last and "0.01 device-h" in last
    pickle.loads(pickle.dumps(view))
