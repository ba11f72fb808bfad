"""Optuna is told early-stopped trials as PRUNED, never as completed low-budget observations."""

from __future__ import annotations

import pickle
import warnings

import optuna
import pytest
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandScheduler

from ecg_tune.tune.searcher import FULL_BUDGET_KEY, make_scheduler, make_searcher
from ecg_tune.tune.spaces import parse_spec
from tests.tune.conftest import SEARCHER_SPEC as SPEC


def states(searcher) -> list[optuna.trial.TrialState]:
    return [t.state for t in searcher.study.get_trials(deepcopy=False)]


def test_stopped_trials_are_pruned_full_budget_trials_complete() -> None:
    searcher = make_searcher(parse_spec(SPEC))
    configs = {tid: searcher.suggest(tid) for tid in ("a", "b", "c", "d")}
    assert all("optim.lr" in c and "train.epochs" in c for c in configs.values())
    for epoch in (1, 2):
        searcher.on_trial_result("a", {"probe_auc": 0.6 + epoch / 100, "epoch": epoch})
        searcher.on_trial_result("b", {"probe_auc": 0.7, "epoch": epoch})
    searcher.on_trial_complete("a", {"probe_auc": 0.62, "epoch": 2})  # ASHA stopped it at epoch 2
    searcher.on_trial_complete("b", {"probe_auc": 0.8, "epoch": 4, FULL_BUDGET_KEY: 1.0})
    searcher.on_trial_complete("c", None, error=True)
    searcher.on_trial_complete("d", {"probe_auc": 0.0, "epoch": 1, "failure_reason": "nan"})
    trials = {t.number: t for t in searcher.study.get_trials(deepcopy=False)}
    assert [trials[i].state.name for i in range(4)] == ["PRUNED", "COMPLETE", "FAIL", "PRUNED"]
    assert trials[0].intermediate_values == {1: 0.61, 2: 0.62}  # kept, but not a final value
    assert trials[1].value == 0.8  # (a pruned trial carries its last intermediate value, as in Optuna)
    # Only the full-budget trial counts as an observation for the sampler.
    completed = searcher.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert [t.value for t in completed] == [0.8]


def test_searcher_state_pickles_and_keeps_proposing_the_same_configs() -> None:
    a = make_searcher(parse_spec(SPEC))
    b = pickle.loads(pickle.dumps(a))  # what Tuner.restore does with the searcher state
    for tid in ("t1", "t2", "t3"):
        assert a.suggest(tid) == b.suggest(tid)


@pytest.mark.parametrize(("name", "cls"), [("asha", ASHAScheduler), ("hyperband", HyperBandScheduler), ("fifo", FIFOScheduler)])
def test_schedulers_use_epochs_as_time(name: str, cls: type) -> None:
    sched = make_scheduler(parse_spec({**SPEC, "scheduler": name}))
    assert isinstance(sched, cls)
    if name != "fifo":
        assert sched._time_attr == "epoch"


def test_ablation_always_runs_full_budget() -> None:
    spec = parse_spec({**SPEC, "space": {}, "scheduler": "asha",
                       "ablation": {"baseline": {"method.name": "simclr"}, "factors": {"optim.lr": [0.1]}}})
    assert isinstance(make_scheduler(spec, ablation=True), FIFOScheduler)


# ---------------------------------------------------------------------------------------------- PBT


def test_pbt_mutates_the_top_level_floats_under_the_grid_key_and_keeps_them_in_bounds() -> None:
    import random

    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.schedulers.pbt import _explore

    from ecg_tune.tune.spaces import GRID_KEY

    spec = parse_spec({**SPEC, "scheduler": "pbt", "budget": {**SPEC["budget"], "perturbation_interval": 2,
                                                               "quantile_fraction": 0.5}})
    sched = make_scheduler(spec)
    assert isinstance(sched, PopulationBasedTraining)
    assert sched._perturbation_interval == 2 and sched._time_attr == "epoch" and sched._quantile_fraction == 0.5
    # method.temperature sits in a branch: only simclr trials have it, so PBT leaves it alone.
    assert set(sched._hyperparam_mutations) == {GRID_KEY}
    assert set(sched._hyperparam_mutations[GRID_KEY]) == {"optim.lr"}
    random.seed(0)
    config = {GRID_KEY: {"optim.lr": 9e-3, "method.name": "simclr", "method.temperature": 0.5}}
    for _ in range(200):  # x1.2 steps and resamples: never past [1e-4, 1e-2]
        config, _ = _explore(config, sched._hyperparam_mutations, sched._resample_probability,
                             sched._perturbation_factors, sched._custom_explore_fn)
        assert 1e-4 <= config[GRID_KEY]["optim.lr"] <= 1e-2
        assert config[GRID_KEY]["method.temperature"] == 0.5 and config[GRID_KEY]["method.name"] == "simclr"
    pickle.loads(pickle.dumps(sched))  # Ray stores the scheduler with the experiment


def test_pbt_never_exploits_on_a_trials_final_result() -> None:
    """A trial exploited on its last result would restart on the donor's finished weights with no
    epoch left to train under the mutated config (seen in CI: its run showed one lr, the final report
    under the new one was a duplicate). PBT may look at the population only before the last epoch."""
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from ecg_tune.tune.searcher import FULL_BUDGET_KEY
    from ecg_tune.tune.spaces import GRID_KEY

    class Consulted(Exception):
        pass

    class Controller:  # the part of Ray's TuneController that PBT uses when it decides on a result
        search_alg = None

        def get_trials(self) -> list:
            raise Consulted

    spec = parse_spec({**SPEC, "scheduler": "pbt", "budget": {**SPEC["budget"], "perturbation_interval": 1}})
    sched = make_scheduler(spec)
    sched.set_search_properties("probe_auc", "max")
    class Trial:  # what PBT reads of a trial when it is added (hashable, as Ray's Trial)
        experiment_tag, config = "0", {GRID_KEY: {"optim.lr": 1e-3}}
        run_metadata = SimpleNamespace(checkpoint_manager=SimpleNamespace(checkpoint_config=SimpleNamespace(num_to_keep=4)))

        def is_finished(self) -> bool:
            return False

    trial = Trial()
    sched.on_trial_add(Controller(), trial)
    with pytest.raises(Consulted):  # an intermediate result past the interval: PBT ranks the population
        sched.on_trial_result(Controller(), trial, {"epoch": 3, "probe_auc": 0.5})
    final = {"epoch": 4, "probe_auc": 0.5, FULL_BUDGET_KEY: 1.0}
    assert sched.on_trial_result(Controller(), trial, final) == TrialScheduler.CONTINUE


def test_pbt_needs_a_float_to_explore() -> None:
    from ecg_tune.errors import ConfigError

    with pytest.raises(ConfigError, match="scheduler.*top level of space"):
        parse_spec({**SPEC, "scheduler": "pbt", "space": {"method.name": {"choice": ["simclr", "byol"]}}})
    with pytest.raises(ConfigError, match="budget.perturbation_interval"):
        parse_spec({**SPEC, "scheduler": "pbt", "budget": {**SPEC["budget"], "perturbation_interval": 0}})
    for bad in (0, 0.6, -0.25):  # the bottom and top fractions may not overlap
        with pytest.raises(ConfigError, match=r"budget.quantile_fraction.*\(0, 0.5\]"):
            parse_spec({**SPEC, "scheduler": "pbt", "budget": {**SPEC["budget"], "quantile_fraction": bad}})


def test_pbt_population_is_seeded_complete_and_within_the_space() -> None:
    from ecg_tune.config import TrialConfig
    from ecg_tune.tune.spaces import sample_population

    spec = parse_spec({**SPEC, "scheduler": "pbt"})
    first, again = sample_population(spec, 8), sample_population(spec, 8)
    assert first == again and len({c["optim.lr"] for c in first}) == 8
    for cfg in first:
        assert 1e-4 <= cfg["optim.lr"] <= 1e-2 and cfg["train.epochs"] == 4
        assert ("method.temperature" in cfg) == (cfg["method.name"] == "simclr")
        assert not any("?" in k for k in cfg)
        TrialConfig.from_flat(cfg)  # every member is a valid trial config
    other = parse_spec({**SPEC, "scheduler": "pbt", "searcher": {**SPEC["searcher"], "seed": 1}})
    assert sample_population(other, 8) != first


def test_pbt_refuses_a_concurrency_limit_below_the_population() -> None:
    from ecg_tune.errors import ConfigError

    with pytest.raises(ConfigError, match="budget.max_concurrent"):
        parse_spec({**SPEC, "scheduler": "pbt", "budget": {**SPEC["budget"], "max_concurrent": 2}})
    parse_spec({**SPEC, "scheduler": "pbt", "budget": {**SPEC["budget"], "max_concurrent": 6}})


def test_a_result_for_a_trial_the_study_already_finished_is_ignored() -> None:
    # A driver crash between Optuna's tell and Ray's snapshot: the rerun trial re-reports its result.
    searcher = make_searcher(parse_spec(SPEC))
    searcher.suggest("a")
    searcher.study.tell(searcher.trials["a"], 0.8)  # told by the crashed driver
    searcher.on_trial_result("a", {"probe_auc": 0.8, "epoch": 4})  # must not raise
    searcher.on_trial_complete("a", {"probe_auc": 0.8, "epoch": 4, FULL_BUDGET_KEY: 1.0})
    assert states(searcher) == [optuna.trial.TrialState.COMPLETE]



def test_an_epoch_reported_again_after_a_restart_keeps_its_value_without_a_warning() -> None:
    # A restarted trial reports again the epochs its own checkpoint holds beyond Ray's (trainable.py);
    # the study may have some of them already.
    searcher = make_searcher(parse_spec(SPEC))
    searcher.suggest("a")
    searcher.on_trial_result("a", {"probe_auc": 0.6, "epoch": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for epoch, value in ((1, 0.6), (2, 0.65), (3, 0.7)):
            searcher.on_trial_result("a", {"probe_auc": value, "epoch": epoch})
    (trial,) = searcher.study.get_trials(deepcopy=False)
    assert trial.intermediate_values == {1: 0.6, 2: 0.65, 3: 0.7}


def test_save_and_restore_keep_the_trials_and_fail_the_orphans_of_a_crashed_driver(tmp_path) -> None:
    """Ray saves the searcher with each experiment snapshot; a trial asked for after the last snapshot
    is unknown to the restored searcher, so its Optuna trial is marked FAIL instead of RUNNING forever."""
    from ecg_tune.errors import EcgTuneError
    from ecg_tune.tune.searcher import RAY_TRIAL_ATTR

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    spec = parse_spec(SPEC)
    first = make_searcher(spec, storage_url=url)
    config = first.suggest("a")
    first.on_trial_result("a", {"probe_auc": 0.6, "epoch": 1})
    first.save(str(tmp_path / "searcher.pkl"))  # Ray's snapshot
    first.suggest("b")  # asked for after the snapshot, then the driver died

    second = make_searcher(spec, storage_url=url)  # a new driver, on the same study
    second.restore(str(tmp_path / "searcher.pkl"))
    trials = {t.user_attrs[RAY_TRIAL_ATTR]: t for t in second.study.get_trials(deepcopy=False)}
    assert trials["a"].state.name == "RUNNING" and trials["b"].state.name == "FAIL"
    assert second.suggest("a") == config  # the same values for the same Ray trial
    second.on_trial_complete("a", {"probe_auc": 0.7, "epoch": 4, FULL_BUDGET_KEY: 1.0})
    assert second.study.get_trials(deepcopy=False)[0].value == 0.7

    # The sampler's random state is restored too: a resumed driver draws what the first would have.
    third = make_searcher(spec, storage_url=f"sqlite:///{tmp_path / 'other.db'}")
    for tid in ("x", "y"):
        third.suggest(tid)
    third.save(str(tmp_path / "third.pkl"))
    expected = third.suggest("z")
    fourth = make_searcher(spec, storage_url=f"sqlite:///{tmp_path / 'other2.db'}")
    fourth.restore(str(tmp_path / "third.pkl"))
    assert fourth.suggest("z") == expected != fourth.suggest("x")

    (tmp_path / "old.pkl").write_bytes(pickle.dumps({"_ot_trials": {}}))  # another version's layout
    with pytest.raises(EcgTuneError, match="another ecg-tune version"):
        second.restore(str(tmp_path / "old.pkl"))


def test_the_searcher_uses_only_public_ray_and_optuna_apis() -> None:
    """Ray's OptunaSearch keeps its trials in private attributes; the searcher is a plain Searcher."""
    from ray.tune.search import Searcher
    from ray.tune.search.optuna import OptunaSearch

    from ecg_tune.tune.searcher import StudySearcher

    assert issubclass(StudySearcher, Searcher) and not issubclass(StudySearcher, OptunaSearch)


def test_a_sweep_whose_saved_state_names_a_class_this_version_lacks_gets_one_clear_error(tmp_path, monkeypatch) -> None:
    """Resuming a sweep started before the searcher became StudySearcher: Ray cannot unpickle the old
    searcher class; the user is told which versions to use and how to continue with --warm-from."""
    from ray import tune

    from ecg_tune.errors import EcgTuneError
    from ecg_tune.tune.sweep import restore_tuner

    def old_state(*args, **kwargs):
        raise AttributeError("Can't get attribute 'BudgetAwareOptunaSearch' on <module 'ecg_tune.tune.searcher'>")

    monkeypatch.setattr(tune.Tuner, "restore", staticmethod(old_state))
    with pytest.raises(EcgTuneError, match="another ecg-tune version.*--warm-from"):
        restore_tuner(tmp_path, trainable=None)

    def other(*args, **kwargs):
        raise AttributeError("'NoneType' object has no attribute 'fit'")

    monkeypatch.setattr(tune.Tuner, "restore", staticmethod(other))
    with pytest.raises(AttributeError, match="NoneType"):  # any other error is not hidden
        restore_tuner(tmp_path, trainable=None)
