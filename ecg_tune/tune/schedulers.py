"""Trial schedulers a sweep can name (`scheduler:` in a search space), one class each.

Registered in `SCHEDULERS` (ecg_tune/plugins.py). A scheduler class has a one-line docstring, `uses`
(the `budget.*` keys it reads, shown by `ecg-tune list schedulers`), two policies the sweep asks
instead of checking names, `check(spec)` (its own refusals at parse time), `mutated_keys(spec)` (config
keys it changes during a trial) and `build(spec, common)` -> a Ray TrialScheduler, where `common` holds
`time_attr`, `metric` and `mode`. Ray is imported inside `build`, so listing costs nothing.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ecg_tune.errors import ConfigError


class Scheduler:
    """Base: `build(spec, common)` returns the Ray scheduler."""

    uses: ClassVar[tuple[str, ...]] = ()
    # Trials are a population drawn up front and evolved (PBT): no search algorithm, one grid of configs.
    population: ClassVar[bool] = False
    # The scheduler limits how many trials run at once itself: the sweep sets no concurrency limit.
    limits_concurrency: ClassVar[bool] = False

    @classmethod
    def check(cls, spec: Any) -> None:
        """Refuse a parsed sweep spec this scheduler cannot run (raise ConfigError naming the key)."""

    @classmethod
    def mutated_keys(cls, spec: Any) -> list[str]:
        """Config keys the scheduler changes during a trial (trials report them as metrics, not params)."""
        return []

    def build(self, spec: Any, common: dict[str, Any]) -> Any:
        raise NotImplementedError


class FIFO(Scheduler):
    """Every trial trains its whole budget (ablation grids always use it)."""

    def build(self, spec: Any, common: dict[str, Any]) -> Any:
        from ray.tune.schedulers import FIFOScheduler

        return FIFOScheduler()


class ASHA(Scheduler):
    """Asynchronous successive halving (Ray's ASHAScheduler): stops the worse trials at each rung."""

    uses = ("budget.max_epochs", "budget.grace_period", "budget.reduction_factor")

    def build(self, spec: Any, common: dict[str, Any]) -> Any:
        from ray.tune.schedulers import ASHAScheduler

        b = spec.budget
        return ASHAScheduler(max_t=b.max_epochs, grace_period=b.grace_period, reduction_factor=b.reduction_factor,
                             **common)


class ASHAPromotion(Scheduler):
    """ASHA by promotion (tune/asha.py): trials pause at rungs and the best are promoted; survives resume."""

    uses = ("budget.max_epochs", "budget.grace_period", "budget.reduction_factor", "budget.max_concurrent")
    limits_concurrency = True

    def build(self, spec: Any, common: dict[str, Any]) -> Any:
        from ecg_tune.tune.asha import PromotionASHA

        b = spec.budget
        return PromotionASHA(max_t=b.max_epochs, grace_period=b.grace_period, reduction_factor=b.reduction_factor,
                             max_concurrent=b.max_concurrent, **common)


class HyperBand(Scheduler):
    """Synchronous HyperBand (Ray's HyperBandScheduler) over brackets of successive halving."""

    uses = ("budget.max_epochs", "budget.reduction_factor")

    def build(self, spec: Any, common: dict[str, Any]) -> Any:
        from ray.tune.schedulers import HyperBandScheduler

        b = spec.budget
        return HyperBandScheduler(max_t=b.max_epochs, reduction_factor=b.reduction_factor, **common)


class PBT(Scheduler):
    """Population-based training: exploit the best members' checkpoints, mutate the space's top-level floats."""

    uses = ("budget.trials", "budget.perturbation_interval", "budget.quantile_fraction")
    population = True

    @classmethod
    def check(cls, spec: Any) -> None:
        if 0 < spec.budget.max_concurrent < spec.budget.trials:
            raise ConfigError("budget.max_concurrent", "pbt trains its population together (members exploit each "
                                                       "other); a smaller limit would run it in separate batches: use 0")
        if not cls.mutated_keys(spec):
            raise ConfigError("scheduler", "pbt explores by mutating float parameters at the top level of space: "
                                           "(e.g. optim.lr: {float: [1e-4, 1e-2], log: true}); this space has none")

    @classmethod
    def mutated_keys(cls, spec: Any) -> list[str]:
        from ecg_tune.tune.space_sampling import pbt_mutations

        return [n.key for n in pbt_mutations(spec.space)]

    def build(self, spec: Any, common: dict[str, Any]) -> Any:
        from ecg_tune.tune.searcher import make_pbt

        return make_pbt(spec, **common)
