"""Sampling a search space: the picklable define-by-run `SearchSpace` Ray's OptunaSearch calls, and
PBT's starting population and mutable parameters.

`SearchSpace` is a plain importable class (never a lambda or a function in `__main__`), because Ray's
OptunaSearch pickles it into the experiment state and `ecg-tune resume` unpickles it in another
process (platform notes §2.2.5).
"""

from __future__ import annotations

from typing import Any

from ecg_tune.tune.space_schema import (
    BranchParam,
    ChoiceParam,
    FixedParam,
    FloatParam,
    IntParam,
    Node,
    SubsetParam,
    SweepSpec,
    subset_flag,
)


class SearchSpace:
    """Define-by-run space for Ray's OptunaSearch: samples the tree, returns the fixed keys."""

    def __init__(self, nodes: list[Node], fixed: dict[str, Any]):
        self.nodes = nodes
        self.fixed = fixed

    def __call__(self, trial: Any) -> dict[str, Any]:
        # Ray captures every suggest_* value itself; return what it cannot see: fixed keys, fixed
        # values inside branches and the joined subset values.
        values: dict[str, Any] = {}
        suggested = self._sample(trial, self.nodes, values)
        derived = {k: v for k, v in values.items() if k not in suggested}
        return {**{k: v for k, v in self.fixed.items() if k not in values}, **derived}

    def sample_flat(self, trial: Any) -> dict[str, Any]:
        """Everything a trial gets: sampled and fixed keys (used with a plain optuna.Trial)."""
        values: dict[str, Any] = {}
        self._sample(trial, self.nodes, values)
        return {**self.fixed, **values}

    def _sample(self, trial: Any, nodes: list[Node], values: dict[str, Any]) -> set[str]:
        """Sample `nodes` into `values`; return the keys that were suggested to Optuna directly."""
        suggested: set[str] = set()
        for node in nodes:
            if isinstance(node, FixedParam):
                values[node.key] = node.value
                continue
            if not isinstance(node, SubsetParam):
                suggested.add(node.key)
            if isinstance(node, FloatParam):
                values[node.key] = trial.suggest_float(node.key, node.low, node.high, log=node.log, step=node.step)
            elif isinstance(node, IntParam):
                step = 1 if node.log else node.step
                values[node.key] = trial.suggest_int(node.key, node.low, node.high, log=node.log, step=step)
            elif isinstance(node, ChoiceParam):
                values[node.key] = trial.suggest_categorical(node.key, node.choices)
            elif isinstance(node, BranchParam):
                option = trial.suggest_categorical(node.key, list(node.options))
                values[node.key] = option
                suggested |= self._sample(trial, node.options[option], values)
            else:
                chosen = [opt for opt in node.options if trial.suggest_categorical(subset_flag(node.key, opt), [True, False])]
                for opt in node.options:  # fill up to min_size in written order
                    if len(chosen) >= node.min_size:
                        break
                    if opt not in chosen:
                        chosen.append(opt)
                chosen = [opt for opt in node.options if opt in chosen]
                values[node.key] = ",".join(chosen)
                for opt in chosen:
                    suggested |= self._sample(trial, node.options[opt], values)
        return suggested


def pbt_mutations(nodes: list[Node]) -> list[FloatParam]:
    """The parameters PBT may mutate: top-level floats. A float changes no tensor shape, so a trial
    can continue another trial's weights under it; a parameter inside a branch or subset exists only
    in some configs, and integers and choices (widths, methods, batch sizes) change the model or the
    schedule: those are sampled once per trial and then kept."""
    return [n for n in nodes if isinstance(n, FloatParam)]


def sample_population(spec: SweepSpec, size: int) -> list[dict[str, Any]]:
    """`size` flat configs drawn at random from the space (seeded), the starting population of PBT."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=spec.searcher.seed))
    space = SearchSpace(spec.space, spec.fixed_flat())
    population = []
    for _ in range(size):
        trial = study.ask()
        population.append(space.sample_flat(trial))
        study.tell(trial, 0.0)
    return population

