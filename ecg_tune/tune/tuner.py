"""Assembling a sweep's Ray Tuner: the trainable with its resources, the searcher or grid (ablation
cells, a PBT population), the scheduler, concurrency, checkpoints and the stop rule. Not started here."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecg_tune.tune.ray_start import cluster_slots, snapshot_period
from ecg_tune.tune.space_schema import SweepSpec

if TYPE_CHECKING:
    from ecg_tune.tune.sweep import SweepSettings

log = logging.getLogger(__name__)


def trainable(spec: SweepSpec, data: Any) -> Any:
    from ray import tune

    from ecg_tune.tune.trainable import train_trial

    if spec.resources.workers > 1:  # data-parallel trials: a driver + Ray Train workers (tune/multiworker.py)
        from ecg_tune.tune.multiworker import trial_trainable

        return trial_trainable(spec.resources, data)
    resources: dict[str, float] = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu, **spec.resources.custom}
    return tune.with_resources(tune.with_parameters(train_trial, data=data), resources)


def short_trial_name(trial: Any) -> str:
    # Ray's default embeds every config value in the folder name and hits path limits (§3.9).
    return f"trial_{trial.trial_id}"


def build_tuner(spec: SweepSpec, settings: SweepSettings, data: Any, num_samples: int, callbacks: list) -> Any:
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    from ecg_tune.plugins import SCHEDULERS
    from ecg_tune.tune.failfast import StopOnVerdict
    from ecg_tune.tune.searcher import make_scheduler, make_searcher
    from ecg_tune.tune.spaces import GRID_KEY, sample_population

    sched = SCHEDULERS[spec.effective_scheduler]  # fifo for an ablation grid
    max_conc = spec.budget.max_concurrent or None
    if max_conc is None and spec.ablation is None and not (sched.population or sched.limits_concurrency):
        # Ray lets a searcher that has no concurrency limit keep just one trial pending, so trials
        # would start one at a time; limit it to the trials the cluster holds now instead.
        slots = cluster_slots(spec)
        max_conc = slots if slots >= 1 else None
        log.info("budget.max_concurrent 0: %s trials at a time (the cluster's current capacity)", slots or "unlimited")
    elif sched.limits_concurrency:
        max_conc = None  # the scheduler limits concurrency itself (e.g. ecg_tune/tune/asha.py)
    snapshot_period(num_samples)
    param_space: dict[str, Any] = {}
    if spec.ablation is not None or sched.population:
        # Every trial fully determined by one grid value, its whole flat config: an ablation cell (per
        # seed), or a PBT population member (Ray's PBT takes no search algorithm: the population is
        # drawn from the space here, and PBT then exploits and explores).
        cells = spec.ablation.grid() if spec.ablation is not None else sample_population(spec, num_samples)
        param_space = {GRID_KEY: tune.grid_search([{**spec.fixed_flat(), **resolve_cfg(spec, c)} for c in cells])}
        search_alg: Any = BasicVariantGenerator(max_concurrent=max_conc or 0)
        num_samples = 1
    else:
        # The URL without its password (public_uri): Ray pickles the searcher into the sweep folder.
        search_alg = make_searcher(spec, storage_url=settings.optuna_storage, sweep_dir=settings.sweep_dir)
        if getattr(settings, "warm_from", None):
            from ecg_tune.tune.warmstart import seed_study

            seed_study(search_alg.study, spec, Path(str(settings.warm_from)), settings.warm_map)
    scheduler = make_scheduler(spec)
    if hasattr(scheduler, "state_callback"):  # ASHA by promotion: its rungs survive `resume`
        callbacks = [*callbacks, scheduler.state_callback()]
    from ecg_tune.tune.cost import make_ledger
    from ecg_tune.tune.progress import ProgressView

    # Each trial's device-seconds in <sweep>/cost.json (budget.device_hours); one compact progress view.
    total = num_samples * (len(param_space[GRID_KEY]["grid_search"]) if param_space else 1)
    callbacks = [*callbacks, make_ledger(settings.sweep_dir),
                 ProgressView(spec.objective.metric, spec.objective.mode, total)]
    tune_config = tune.TuneConfig(
        search_alg=search_alg,
        scheduler=scheduler,
        num_samples=num_samples,
        max_concurrent_trials=max_conc,
        time_budget_s=spec.budget.time_budget_s,
        trial_dirname_creator=short_trial_name,
        trial_name_creator=short_trial_name,
        # Trial overhead ~0.3 s instead of ~3 s: no new process + torch import per trial. Not with workers:
        # a trial's Train run (its controller, workers, placement group) ends with its driver's process.
        reuse_actors=spec.resources.workers == 1,
    )
    run_config = tune.RunConfig(
        name=spec.name,
        storage_path=str(Path(settings.sweep_dir).parent),
        callbacks=callbacks,
        # PBT hands a trial's checkpoint to others later: keep more of them around (Ray warns at <= 2).
        # PBT exploits the donor's checkpoint of its last perturbation: keep at least that far back.
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=max(4, spec.budget.perturbation_interval + 2) if sched.population else 2),
        failure_config=tune.FailureConfig(max_failures=3),
        stop=StopOnVerdict(spec.name),  # the first trials all failed the same way (failfast.py)
        verbose=0,  # Ray's per-result tables: replaced by ProgressView
    )
    return tune.Tuner(trainable(spec, data), param_space=param_space, tune_config=tune_config, run_config=run_config)


def resolve_cfg(spec: SweepSpec, cfg: dict[str, Any]) -> dict[str, Any]:
    out = dict(cfg)
    if "data.pretrain" in out:
        out["data.pretrain"] = spec.resolve_pretrain(out["data.pretrain"])
    return out
