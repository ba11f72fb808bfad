"""Optuna samplers a sweep can name (`searcher.sampler:`), one class each.

Registered in `SAMPLERS` (ecg_tune/plugins.py). `build(searcher)` gets the spec's `searcher:` section
(`seed`, `n_startup_trials`) and returns an Optuna sampler; Optuna is imported inside `build`.
`multi_objective`: the sampler drives a search over several objectives; `constrained`: it honours the
constraint values the searcher sets on each trial (`Trial.set_constraint`, Optuna 5's replacement of
`constraints_func`) from `objective.constraints`.
"""

from __future__ import annotations

from typing import Any, ClassVar


class Sampler:
    """Base: `build(searcher)` returns the Optuna sampler."""

    uses: ClassVar[tuple[str, ...]] = ("searcher.seed",)
    multi_objective: ClassVar[bool] = False
    constrained: ClassVar[bool] = False

    def build(self, searcher: Any) -> Any:
        raise NotImplementedError


class TPE(Sampler):
    """Tree-structured Parzen estimator (Optuna's TPESampler), random for the first n_startup_trials."""

    uses = ("searcher.seed", "searcher.n_startup_trials")
    multi_objective = constrained = True

    def build(self, searcher: Any) -> Any:
        import optuna

        return optuna.samplers.TPESampler(seed=searcher.seed, n_startup_trials=searcher.n_startup_trials)


class NSGAII(Sampler):
    """NSGA-II genetic algorithm for multi-objective search (Optuna's NSGAIISampler; population 50)."""

    multi_objective = constrained = True

    def build(self, searcher: Any) -> Any:
        import optuna

        return optuna.samplers.NSGAIISampler(seed=searcher.seed)


class Random(Sampler):
    """Independent uniform draws from the space (Optuna's RandomSampler)."""

    multi_objective = True

    def build(self, searcher: Any) -> Any:
        import optuna

        return optuna.samplers.RandomSampler(seed=searcher.seed)


class CmaEs(Sampler):
    """CMA evolution strategy over the numeric parameters (Optuna's CmaEsSampler)."""

    uses = ("searcher.seed", "searcher.n_startup_trials")

    def build(self, searcher: Any) -> Any:
        import optuna

        return optuna.samplers.CmaEsSampler(seed=searcher.seed, n_startup_trials=searcher.n_startup_trials)


class GP(Sampler):
    """Gaussian-process Bayesian optimisation (Optuna's GPSampler)."""

    uses = ("searcher.seed", "searcher.n_startup_trials")
    multi_objective = constrained = True

    def build(self, searcher: Any) -> Any:
        import optuna

        return optuna.samplers.GPSampler(seed=searcher.seed, n_startup_trials=searcher.n_startup_trials)


class QMC(Sampler):
    """Quasi-Monte Carlo (Sobol) points over the space (Optuna's QMCSampler)."""

    multi_objective = True

    def build(self, searcher: Any) -> Any:
        import optuna

        return optuna.samplers.QMCSampler(seed=searcher.seed)
