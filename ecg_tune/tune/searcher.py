"""Optuna searcher and Ray schedulers built from a SweepSpec.

`StudySearcher` is a Ray Tune `Searcher` (its public plug-in API) over an Optuna study, through
Optuna's public ask-and-tell interface. It differs from Ray's stock `OptunaSearch` where a sweep needs
it: a trial that ASHA stopped after one epoch is told as PRUNED, not as a COMPLETE low-budget score
(platform notes §3.11: stock OptunaSearch teaches TPE such scores as if final); intermediate values
use epochs as steps; a study in an RDB that outlived a crashed driver is reconciled on restore; the
device-hour budget and outcome constraints reach the sampler. (It replaced a subclass of OptunaSearch
that had to read that class's private bookkeeping.)
"""

from __future__ import annotations

import logging
import pickle
import warnings
from typing import Any

import optuna
from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler
from ray.tune.search import Searcher

from ecg_tune.errors import EcgTuneError
from ecg_tune.plugins import SAMPLERS, SCHEDULERS
from ecg_tune.tune.spaces import GRID_KEY, SearchSpace, SweepSpec, pbt_mutations

log = logging.getLogger(__name__)

FULL_BUDGET_KEY = "budget_complete"  # 1.0 in the report of a trial that trained all epochs
RAY_TRIAL_ATTR = "ray_trial_id"  # an Optuna trial's user attribute: the Ray trial it became
_STATE_VERSION = 1


class StudySearcher(Searcher):
    """Proposes each Ray trial's config from an Optuna study (define-by-run over the sweep's space)
    and tells the study what became of it: COMPLETE only for a trial that trained its full budget."""

    def __init__(self, space: SearchSpace, *, metric: str | list[str], mode: str | list[str],
                 sampler: optuna.samplers.BaseSampler, study_name: str, storage: Any = None,
                 sweep_dir: str | None = None, device_hours: float | None = None,
                 constraints: dict[str, tuple[str, float]] | None = None) -> None:
        super().__init__(metric=metric, mode=mode)  # type: ignore[arg-type]  # a list for several objectives
        self.space = space
        modes = mode if isinstance(mode, list) else [mode]
        self.study = optuna.create_study(
            storage=storage, sampler=sampler, pruner=optuna.pruners.NopPruner(), study_name=study_name,
            load_if_exists=True, directions=["minimize" if m == "min" else "maximize" for m in modes])
        self.trials: dict[str, optuna.trial.Trial] = {}  # Ray trial id -> the Optuna trial asked for it
        self.told: set[str] = set()  # Ray trial ids whose end the study has been told
        # budget.device_hours: no new trial once the sweep's ledger (tune/cost.py) says it is spent.
        self.sweep_dir, self.device_hours = sweep_dir, device_hours
        self.constraints = dict(constraints or {})  # objective.constraints: metric -> (max|min, bound)
        self.budget_told = False

    # ------------------------------------------------------------------ Ray's Searcher interface
    def suggest(self, trial_id: str) -> dict | str | None:  # type: ignore[override]  # FINISHED is Ray's str
        from ecg_tune.tune.cost import budget_spent, spent_hours

        if trial_id not in self.trials:
            if budget_spent(self.sweep_dir, self.device_hours):
                if not self.budget_told:
                    self.budget_told = True
                    log.warning("budget.device_hours spent (%.4g of %.4g device-hours): no new trials",
                                spent_hours(self.sweep_dir), self.device_hours)  # type: ignore[arg-type]
                return Searcher.FINISHED
            trial = self.study.ask()
            trial.set_user_attr(RAY_TRIAL_ATTR, trial_id)
            self.trials[trial_id] = trial
        # Asking the same trial again returns the values it already holds (Optuna's define-by-run).
        return self.space.sample_flat(self.trials[trial_id])

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        # Use epochs as Optuna's step so intermediate values line up across trials.
        if isinstance(self.metric, list):  # Optuna keeps no intermediate values of several objectives
            return
        if trial_id in self.told or trial_id not in self.trials or self.metric not in result:
            return
        try:
            with warnings.catch_warnings():
                # A restarted trial replays the epochs its checkpoint holds beyond Ray's (trainable.py);
                # Optuna may have them already, and ignores them with a warning.
                warnings.filterwarnings("ignore", message="The reported value is ignored")
                self.trials[trial_id].report(result[self.metric], _step(result))
        except optuna.exceptions.UpdateFinishedTrialError:
            # The study (an RDB outlives the driver) was told this trial's end before a driver crash, but
            # Ray's older snapshot reran it, and it reports its final result again: nothing to add.
            self.told.add(trial_id)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self.told or trial_id not in self.trials:
            return
        trial = self.trials[trial_id]
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        values = [result.get(m) if result else None for m in metrics]
        missing = any(v is None for v in values)
        value: Any = values if isinstance(self.metric, list) else values[0]
        full = bool(result and result.get(FULL_BUDGET_KEY))
        if error or (full and missing):
            state, value = optuna.trial.TrialState.FAIL, None
        elif full:
            state = optuna.trial.TrialState.COMPLETE
        else:
            state, value = optuna.trial.TrialState.PRUNED, None
        try:
            from ecg_tune.tune.cost import constraint_values

            # Optuna's samplers (TPE, NSGA-II, GP) treat a trial with a constraint value > 0 as infeasible.
            for metric, violation in constraint_values(self.constraints, result or {}).items():
                trial.set_constraint(metric, violation)
            self.study.tell(trial, value, state=state)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # told by a driver that crashed before Ray's snapshot (see on_trial_result)
        except Exception as exc:  # e.g. a NaN value: never let the searcher kill the sweep
            log.warning("optuna could not record trial %s: %s", trial_id, exc)
        self.told.add(trial_id)

    def save(self, checkpoint_path: str) -> None:
        # Ray writes this file atomically (save_to_dir); the study itself lives in its storage. The
        # sampler goes with it: its random state, restored, keeps a resumed sweep from drawing again
        # the configs it drew after its start.
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"version": _STATE_VERSION, "trials": self.trials, "told": self.told,
                         "budget_told": self.budget_told, "sampler": self.study.sampler}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise EcgTuneError(f"{checkpoint_path}: searcher state written by another ecg-tune version "
                               "(before the Optuna study searcher); resume this sweep with that version")
        self.trials, self.told, self.budget_told = state["trials"], state["told"], state["budget_told"]
        self.study.sampler = state["sampler"]
        self.fail_orphans()

    # ------------------------------------------------------------------ helpers
    def fail_orphans(self) -> int:
        """Mark FAIL the study's RUNNING trials that this searcher does not know.

        They were asked for after Ray's last experiment snapshot before a driver crash: Ray never
        recorded them, so after `Tuner.restore` no Ray trial will ever tell them, and they would stay
        RUNNING in the study (and in optuna-dashboard) forever.
        """
        known = {t.number for t in self.trials.values()}
        orphans = [t.number for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
                   if t.number not in known]
        for number in orphans:
            try:
                self.study.tell(number, state=optuna.trial.TrialState.FAIL)
            except Exception as exc:  # e.g. another process finished it meanwhile
                log.warning("optuna: could not mark orphaned trial %d FAIL: %s", number, exc)
        if orphans:
            log.warning("optuna: marked %d trial(s) FAIL that a crashed driver had started but Ray never ran: %s",
                        len(orphans), orphans)
        return len(orphans)


def _step(result: dict) -> int:
    return int(result.get("epoch", result.get("training_iteration", 0)))


def make_sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    """The Optuna sampler registered as `searcher.sampler` (SAMPLERS, tune/samplers.py)."""
    sampler: optuna.samplers.BaseSampler = SAMPLERS[spec.searcher.sampler]().build(spec.searcher)
    return sampler


def make_searcher(spec: SweepSpec, *, storage_url: str | None = None,
                  sweep_dir: str | None = None) -> StudySearcher:
    """The searcher; its study lives in `storage_url` (sweep.py defaults it to a SQLite file in the sweep
    folder, so optuna-dashboard can open it during and after the sweep), in memory when None."""
    storage = optuna.storages.RDBStorage(storage_url) if storage_url else None
    obj = spec.objective
    return StudySearcher(
        SearchSpace(spec.space, spec.fixed_flat()),
        metric=obj.metrics if obj.multi else obj.metric,
        mode=obj.modes if obj.multi else obj.mode,
        sampler=make_sampler(spec),
        study_name=spec.name,
        storage=storage,
        sweep_dir=sweep_dir,
        device_hours=spec.budget.device_hours,
        constraints=obj.constraints,
    )


def make_scheduler(spec: SweepSpec, *, ablation: bool = False) -> TrialScheduler:
    """The Ray scheduler registered as the spec's scheduler (SCHEDULERS, tune/schedulers.py)."""
    common: dict[str, Any] = {"time_attr": "epoch", "metric": spec.objective.metric, "mode": spec.objective.mode}
    sched = "fifo" if ablation else spec.effective_scheduler  # ablation cells all train fully
    scheduler: TrialScheduler = SCHEDULERS[sched]().build(spec, common)
    return scheduler


class ClipToSpace:
    """PBT's explore step multiplies a value by 0.8 or 1.2 without looking at its bounds; bring the
    mutated floats back into the space's [low, high]. (A class, not a lambda: Ray pickles the scheduler.)"""

    def __init__(self, bounds: dict[str, tuple[float, float]]):
        self.bounds = bounds

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        cell = config.get(GRID_KEY)
        if isinstance(cell, dict):
            for key, (low, high) in self.bounds.items():
                if isinstance(cell.get(key), int | float):
                    cell[key] = float(min(max(cell[key], low), high))
        return config


class FinalResultPBT(PopulationBasedTraining):
    """Ray's PBT, except that a trial's final result is never a reason to exploit.

    Ray hands PBT every result, the last one included. A bottom-quantile trial exploited on its last
    epoch would restart on the donor's finished weights with no epoch left to train under the mutated
    config: its final result would mix the donor's weights and probe with its own evaluation, and the
    mutated value would never be trained with. Such a trial simply finishes (until it has ended, the
    others see it with the score and checkpoint of its previous perturbation; then Ray's PBT drops it)."""

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        if result.get(FULL_BUDGET_KEY):
            return TrialScheduler.CONTINUE
        return str(super().on_trial_result(tune_controller, trial, result))


def make_pbt(spec: SweepSpec, **common: Any) -> PopulationBasedTraining:
    """PBT over a population that sweep.py puts under GRID_KEY (Ray's PBT refuses a search algorithm,
    so the population is drawn from the space up front): the space's top-level floats are mutated."""
    from ray import tune

    floats = pbt_mutations(spec.space)
    mutations = {n.key: (tune.loguniform(n.low, n.high) if n.log else tune.uniform(n.low, n.high)) for n in floats}
    return FinalResultPBT(
        **common,  # time_attr, metric, mode: as every scheduler (make_scheduler)
        perturbation_interval=spec.budget.perturbation_interval,
        quantile_fraction=spec.budget.quantile_fraction,
        hyperparam_mutations={GRID_KEY: mutations},
        custom_explore_fn=ClipToSpace({n.key: (n.low, n.high) for n in floats}),
    )
