"""Hyperparameter importance: an in-memory Optuna study rebuilt from the complete MLflow trial runs.

The distributions come from the sweep.yaml space nodes, so Optuna sees the same parameters the
searcher sampled: floats/ints with their bounds and log scale, choices and branches as categoricals,
and each subset member as the on/off categorical `subset_flag(key, option)` (trials log only the
joined subset value, from which the switch is read back).
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from ecg_tune.tune.report.data import SweepRecord, Trial
from ecg_tune.tune.spaces import (
    BranchParam,
    ChoiceParam,
    FloatParam,
    IntParam,
    Node,
    SubsetParam,
    subset_flag,
)

MIN_TRIALS = 3


def distributions(nodes: list[Node]) -> dict[str, BaseDistribution]:
    out: dict[str, BaseDistribution] = {}
    for node in nodes:
        if isinstance(node, FloatParam):
            out[node.key] = FloatDistribution(node.low, node.high, log=node.log, step=node.step)
        elif isinstance(node, IntParam):
            out[node.key] = IntDistribution(node.low, node.high, log=node.log, step=1 if node.log else node.step)
        elif isinstance(node, ChoiceParam):
            out[node.key] = CategoricalDistribution(node.choices)
        elif isinstance(node, BranchParam):
            out[node.key] = CategoricalDistribution(list(node.options))
            for sub in node.options.values():
                out.update(distributions(sub))
        elif isinstance(node, SubsetParam):
            for option, sub in node.options.items():
                out[subset_flag(node.key, option)] = CategoricalDistribution([True, False])
                out.update(distributions(sub))
    return out


def _contains(dist: BaseDistribution, value: Any) -> bool:
    """Whether `value` lies in `dist`, from its public low/high/step (Optuna's own check is private)."""
    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    if isinstance(dist, FloatDistribution | IntDistribution):
        if not dist.low <= value <= dist.high:
            return False
        if dist.step is None:
            return True
        k = (value - dist.low) / dist.step
        return abs(k - round(k)) < 1.0e-8
    return False


def _value(text: str, dist: BaseDistribution) -> Any:
    """The param string as the distribution's value, or None when it does not belong to it."""
    try:
        if isinstance(dist, FloatDistribution):
            value: Any = float(text)
        elif isinstance(dist, IntDistribution):
            value = int(float(text))
        elif isinstance(dist, CategoricalDistribution):
            matches = [c for c in dist.choices if str(c) == text]
            if not matches:
                return None
            value = matches[0]
        else:
            return None
        return value if _contains(dist, value) else None
    except (ValueError, TypeError):
        return None


def trial_params(trial: Trial, dists: dict[str, BaseDistribution]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, dist in dists.items():
        key, sep, option = name.partition("?")
        if sep:  # a subset member's switch, read back from the joined subset value
            if key in trial.params:
                out[name] = option in trial.params[key].split(",")
            continue
        if name in trial.params:
            value = _value(trial.params[name], dist)
            if value is not None:
                out[name] = value
    return out


def rebuild_study(rec: SweepRecord) -> tuple[optuna.Study, dict[str, BaseDistribution]]:
    dists = distributions(rec.space)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line per report
    try:
        study = optuna.create_study(direction="maximize" if rec.mode == "max" else "minimize")
    finally:
        optuna.logging.set_verbosity(verbosity)
    for t in rec.trials:
        value = t.value(rec.objective)
        if not t.complete or math.isnan(value):
            continue
        params = trial_params(t, dists)
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: dists[k] for k in params}, value=value,
            user_attrs={"trial_id": t.trial_id},
        ))
    return study, dists


def param_importances(rec: SweepRecord) -> tuple[dict[str, float] | None, str | None]:
    """(importance per parameter, what it rests on) or (None, why importance was skipped: fewer than
    MIN_TRIALS complete trials, nothing varies, a degenerate study)."""
    if rec.ablation is not None or not rec.space:
        return None, "hyperparameter importance skipped: no search space (an ablation grid or a missing sweep.yaml)"
    study, _ = rebuild_study(rec)
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(done) < MIN_TRIALS:
        return None, f"hyperparameter importance skipped: {len(done)} complete trials (needs at least {MIN_TRIALS})"
    # Optuna's evaluators need parameters present in every trial (branch-specific ones are not).
    common = set.intersection(*(set(t.params) for t in done))
    varying = sorted(k for k in common if len({repr(t.params[k]) for t in done}) > 1)
    if not varying:
        return None, "hyperparameter importance skipped: no parameter present in every complete trial varies"
    try:
        imp = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), params=varying
        )
    except Exception as exc:  # a degenerate study (e.g. constant objective) must not stop the report
        return None, f"hyperparameter importance failed: {exc}"
    return {k: float(v) for k, v in imp.items()}, (f"fANOVA over {len(done)} complete trials "
                                                  f"(shown from {MIN_TRIALS} complete trials on)")
