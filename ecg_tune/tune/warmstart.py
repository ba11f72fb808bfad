"""Warm start: seed a new sweep's Optuna study with the finished trials of an earlier sweep.

`ecg-tune sweep SPACE --warm-from OLD_SWEEP [--warm-map old=new ...]`. Each COMPLETE trial of the old
study is added with its values; each PRUNED one (stopped early by the scheduler) as PRUNED with its
intermediate values and the user attr `warm.stopped`. Parameters are given the *new* space's
distributions (so a widened space continues where the old one was); a trial with a value the new
space cannot hold (a narrowed range, a dropped choice) is left out and counted. A parameter name the
new space does not know is refused, unless `--warm-map old=new` renames it. Added trials count as
TPE's startup trials: with enough of them the first new trials are already model-based.
"""

from __future__ import annotations

import logging
from typing import Any

from ecg_tune.errors import ConfigError, EcgTuneError
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

log = logging.getLogger(__name__)


def parse_map(pairs: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or []:
        old, sep, new = pair.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise ConfigError("--warm-map", f"{pair!r}: expected OLD=NEW, e.g. optim.lr=optim.base_lr")
        out[old.strip()] = new.strip()
    return out


def distributions(nodes: list[Node]) -> dict[str, Any]:
    """Every Optuna parameter the space can suggest (all branches), with its distribution
    (the names and arguments of tune/space_sampling.py's suggest_* calls)."""
    import optuna.distributions as d

    out: dict[str, Any] = {}
    for node in nodes:
        if isinstance(node, FixedParam):
            continue
        if isinstance(node, FloatParam):
            out[node.key] = d.FloatDistribution(node.low, node.high, log=node.log, step=node.step)
        elif isinstance(node, IntParam):
            out[node.key] = d.IntDistribution(node.low, node.high, log=node.log, step=1 if node.log else node.step)
        elif isinstance(node, ChoiceParam):
            out[node.key] = d.CategoricalDistribution(node.choices)
        elif isinstance(node, BranchParam):
            out[node.key] = d.CategoricalDistribution(list(node.options))
            for sub in node.options.values():
                out.update(distributions(sub))
        elif isinstance(node, SubsetParam):
            for opt, sub in node.options.items():
                out[subset_flag(node.key, opt)] = d.CategoricalDistribution([True, False])
                out.update(distributions(sub))
    return out


def _holds(dist: Any, value: Any) -> bool:
    """Whether an Optuna distribution can hold `value` (from its public attributes)."""
    import optuna.distributions as d

    if isinstance(dist, d.CategoricalDistribution):
        return any(value == c and type(value) is type(c) for c in dist.choices)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if not dist.low <= value <= dist.high:
        return False
    step = getattr(dist, "step", None)
    if step is None:
        return not isinstance(dist, d.IntDistribution) or float(value).is_integer()
    k = (value - dist.low) / step
    return abs(k - round(k)) < 1e-8


def warm_trials(old_trials: list[Any], new_dists: dict[str, Any], mapping: dict[str, str],
                source: str) -> tuple[list[Any], int]:
    """(trials to add, how many were left out because the new space cannot hold their values)."""
    import optuna
    from optuna.trial import TrialState

    mapping = dict(mapping)
    unknown = sorted({k for t in old_trials for k in t.params if mapping.get(k, k) not in new_dists})
    if unknown:
        raise ConfigError("--warm-from", f"the earlier sweep's parameter(s) {', '.join(unknown)} are not in this "
                                         "space: rename them with --warm-map OLD=NEW (or start without --warm-from)")
    added, skipped = [], 0
    for t in old_trials:
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        params = {mapping.get(k, k): v for k, v in t.params.items()}
        if not all(_holds(new_dists[k], v) for k, v in params.items()):
            skipped += 1
            continue
        attrs = {**t.user_attrs, "warm.from": source, "warm.trial": t.number}
        if t.state == TrialState.PRUNED:
            attrs["warm.stopped"] = True
        added.append(optuna.trial.create_trial(
            state=t.state, values=t.values if t.state == TrialState.COMPLETE else None,
            params=params, distributions={k: new_dists[k] for k in params}, user_attrs=attrs,
            intermediate_values=dict(t.intermediate_values)))
    return added, skipped


def old_study(old_sweep_dir: Any) -> tuple[Any, Any]:
    """(old study, old spec) of a sweep folder."""
    import optuna
    import yaml

    from ecg_tune.tune.spaces import parse_spec
    from ecg_tune.tune.sweep import SweepSettings

    settings = SweepSettings.load(old_sweep_dir)
    if not settings.optuna_storage:
        raise EcgTuneError(f"sweep {settings.name!r} kept its Optuna study in memory (it predates durable "
                           "studies, or was a grid): nothing to warm-start from")
    text = (old_sweep_dir / "sweep.yaml").read_text()
    spec = parse_spec(yaml.safe_load(text), base_dir=str(old_sweep_dir), source_text=text)
    try:
        return optuna.load_study(study_name=settings.name, storage=settings.optuna_storage), spec
    except Exception as exc:
        raise EcgTuneError(f"could not open the Optuna study of sweep {settings.name!r}: {exc}") from None


def seed_study(study: Any, spec: SweepSpec, old_sweep_dir: Any, mapping: dict[str, str]) -> int:
    """Add the old sweep's compatible trials to `study` (the new sweep's); return how many were added."""
    old, old_spec = old_study(old_sweep_dir)
    if old_spec.objective.metrics != spec.objective.metrics or old_spec.objective.modes != spec.objective.modes:
        raise ConfigError("--warm-from", f"the earlier sweep optimised {old_spec.objective.metrics} "
                                         f"({old_spec.objective.modes}), this one {spec.objective.metrics} "
                                         f"({spec.objective.modes}): their values do not compare")
    trials, skipped = warm_trials(old.get_trials(deepcopy=False), distributions(spec.space), mapping,
                                  str(old_sweep_dir))
    study.add_trials(trials)
    log.info("warm start: %d trial(s) from %s%s", len(trials), old_sweep_dir,
             f" ({skipped} left out: values outside this space)" if skipped else "")
    return len(trials)
