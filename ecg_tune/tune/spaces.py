"""Search-space YAML → validated `SweepSpec` → a picklable Optuna define-by-run `SearchSpace`.

The schema is documented in `search_spaces/README.md`. Every error names the key path
(`space.method.name.simclr.method.temperature: low (2.0) must be below high (1.0)`) and is raised
before Ray starts. YAML is loaded with `yaml.safe_load` only, so tags that would construct Python
objects are refused.

`SearchSpace` is a plain importable class (never a lambda or a function in `__main__`), because Ray's
OptunaSearch pickles it into the experiment state and `ecg-tune resume` unpickles it in another
process (platform notes §2.2.5).

This module parses; the schema, validation and sampling live in `space_schema.py`,
`space_validate.py` and `space_sampling.py` (their names are re-exported here).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, get_args, get_type_hints

import yaml

from ecg_tune.errors import ConfigError
from ecg_tune.plugins import SAMPLERS, SCHEDULERS
from ecg_tune.tune.space_sampling import SearchSpace, pbt_mutations, sample_population
from ecg_tune.tune.space_schema import (
    GRID_KEY,
    MAX_CONCURRENT,
    MAX_EPOCHS,
    MAX_TRIALS,
    OBJECTIVE_METRICS,
    Ablation,
    BranchParam,
    Budget,
    ChoiceParam,
    FixedParam,
    FloatParam,
    IntParam,
    Node,
    Objective,
    Resources,
    Searcher,
    SubsetParam,
    SweepSpec,
    check_name,
    check_objective,
    parse_objective,
    subset_flag,
    trial_config,
    unwrap,
)
from ecg_tune.tune.space_validate import check_workers, validate, validate_flat

__all__ = [
    "GRID_KEY", "MAX_CONCURRENT", "MAX_EPOCHS", "MAX_TRIALS", "OBJECTIVE_METRICS", "Ablation", "BranchParam",
    "Budget", "ChoiceParam", "FixedParam", "FloatParam", "IntParam", "Node", "Objective", "Resources",
    "SearchSpace", "Searcher", "SubsetParam", "SweepSpec", "check_name", "check_objective", "load_spec",
    "parse_spec", "pbt_mutations", "sample_population", "subset_flag", "trial_config", "unwrap", "validate",
    "validate_flat",
]


_TOP_KEYS = {
    "name", "data", "objective", "budget", "resources", "scheduler", "searcher", "fixed", "space", "ablation",
}


def _require_mapping(path: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(path, f"expected a mapping, got {type(value).__name__}")
    return value


def _check_keys(path: str, mapping: dict[str, Any], allowed: set[str]) -> None:
    for key in mapping:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise ConfigError(where, f"unknown key; allowed: {', '.join(sorted(allowed))}")


def _number(path: str, value: Any, kind: type = float) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(path, f"expected a number, got {value!r}")
    if kind is int and not float(value).is_integer():
        raise ConfigError(path, f"expected an integer, got {value!r}")
    return kind(value)


def _parse_node(path: str, key: str, value: Any) -> Node:
    if not isinstance(value, dict):
        if isinstance(value, list):
            raise ConfigError(path, "a list is ambiguous here: write {choice: [...]} to sample or a scalar to fix")
        return FixedParam(key, value)
    kinds = [k for k in ("float", "int", "choice", "branch", "subset", "value") if k in value]
    if len(kinds) != 1:
        raise ConfigError(path, "expected exactly one of float, int, choice, branch, subset, value")
    kind = kinds[0]
    if kind in ("float", "int"):
        _check_keys(path, value, {kind, "log", "step"})
        bounds = value[kind]
        if not isinstance(bounds, list) or len(bounds) != 2:
            raise ConfigError(f"{path}.{kind}", "expected [low, high]")
        num = float if kind == "float" else int
        low, high = (_number(f"{path}.{kind}", b, num) for b in bounds)
        if not low < high:
            raise ConfigError(f"{path}.{kind}", f"low ({low}) must be below high ({high})")
        log = value.get("log", False)
        if not isinstance(log, bool):
            raise ConfigError(f"{path}.log", f"expected true or false, got {log!r}")
        if log and low <= 0:
            raise ConfigError(f"{path}.log", f"a log scale needs low > 0, got {low}")
        step = value.get("step")
        if step is not None:
            step = _number(f"{path}.step", step, num)
            if step <= 0:
                raise ConfigError(f"{path}.step", "must be positive")
        if kind == "float":
            if not (math.isfinite(low) and math.isfinite(high)):
                raise ConfigError(f"{path}.float", "bounds must be finite")
            return FloatParam(key, low, high, log, step)
        return IntParam(key, low, high, log, step or 1)
    if kind == "value":
        _check_keys(path, value, {"value"})
        return FixedParam(key, value["value"])
    if kind == "choice":
        _check_keys(path, value, {"choice"})
        choices = value["choice"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{path}.choice", "expected a non-empty list")
        for i, c in enumerate(choices):
            if not isinstance(c, str | int | float | bool) and c is not None:
                raise ConfigError(f"{path}.choice[{i}]", "choices must be scalars (join lists with commas)")
        return ChoiceParam(key, choices)
    allowed = {kind, "min_size"} if kind == "subset" else {kind}
    _check_keys(path, value, allowed)
    options = _require_mapping(f"{path}.{kind}", value[kind])
    if not options:
        raise ConfigError(f"{path}.{kind}", "expected at least one option")
    parsed = {
        str(opt): _parse_space(f"{path}.{kind}.{opt}", sub or {}) for opt, sub in options.items()
    }
    if kind == "branch":
        return BranchParam(key, parsed)
    min_size = _number(f"{path}.min_size", value.get("min_size", 1), int)
    if not 0 <= min_size <= len(parsed):
        raise ConfigError(f"{path}.min_size", f"must be between 0 and {len(parsed)}")
    return SubsetParam(key, parsed, min_size)


def _parse_space(path: str, mapping: Any) -> list[Node]:
    mapping = _require_mapping(path, mapping)
    return [_parse_node(f"{path}.{k}", str(k), v) for k, v in mapping.items()]


def parse_spec(doc: Any, *, base_dir: str = ".", source_text: str = "") -> SweepSpec:
    doc = _require_mapping("", doc)
    _check_keys("", doc, _TOP_KEYS)
    name = check_name("name", doc.get("name"))
    spec = SweepSpec(name=name, source_text=source_text, base_dir=base_dir)

    data = _require_mapping("data", doc.get("data", {}))
    _check_keys("data", data, {"corpora", "pretrain", "downstream"})
    spec.corpora = {str(k): str(v) for k, v in _require_mapping("data.corpora", data.get("corpora", {})).items()}
    pretrain = data.get("pretrain", [])
    if isinstance(pretrain, str):
        pretrain = [pretrain]
    if not isinstance(pretrain, list) or not all(isinstance(p, str) for p in pretrain):
        raise ConfigError("data.pretrain", f"expected a dataset path or a list of paths, got {pretrain!r}")
    spec.pretrain = pretrain
    downstream = data.get("downstream", "")
    if not isinstance(downstream, str):
        raise ConfigError("data.downstream", f"expected a dataset path, got {downstream!r}")
    spec.downstream = downstream

    spec.objective = parse_objective(doc.get("objective", {}))

    budget = _require_mapping("budget", doc.get("budget", {}))
    _check_keys("budget", budget, {f for f in Budget.__dataclass_fields__})
    b = Budget()
    hints = get_type_hints(Budget)  # a key's number kind is its field's type (`float | None` is a float)
    for k, v in budget.items():
        kind = float if float in (hints[k], *get_args(hints[k])) else int
        setattr(b, k, None if v is None else _number(f"budget.{k}", v, kind))
    if b.trials < 1 or b.max_epochs < 1:
        raise ConfigError("budget", "trials and max_epochs must be at least 1")
    if not 1 <= b.grace_period <= b.max_epochs:
        raise ConfigError("budget.grace_period", f"must be between 1 and max_epochs ({b.max_epochs})")
    if b.reduction_factor < 2:
        raise ConfigError("budget.reduction_factor", "must be at least 2")
    if b.max_concurrent < 0:
        raise ConfigError("budget.max_concurrent", "must be 0 (no limit) or positive")
    for key, high in (("trials", MAX_TRIALS), ("max_concurrent", MAX_CONCURRENT), ("max_epochs", MAX_EPOCHS)):
        if getattr(b, key) > high:
            raise ConfigError(f"budget.{key}", f"{getattr(b, key)} is above the limit of {high}; split the sweep "
                                               "(or resume it with a larger budget) instead")
    if b.time_budget_s is not None and b.time_budget_s <= 0:
        raise ConfigError("budget.time_budget_s", "must be positive (or omitted for no limit)")
    if b.device_hours is not None and b.device_hours <= 0:
        raise ConfigError("budget.device_hours", "must be positive (or omitted for no limit)")
    if b.perturbation_interval < 1:
        raise ConfigError("budget.perturbation_interval", "must be at least 1 epoch")
    if not 0 < b.quantile_fraction <= 0.5:
        raise ConfigError("budget.quantile_fraction", f"must be in (0, 0.5] (the bottom and top fractions "
                                                      f"may not overlap), got {b.quantile_fraction}")
    spec.budget = b

    res = _require_mapping("resources", doc.get("resources", {}))
    _check_keys("resources", res, {"cpu", "gpu", "custom", "workers", "cpu_per_worker", "gpu_per_worker"})
    _require_mapping("resources.custom", res.get("custom", {}))
    spec.resources = Resources(
        cpu=_number("resources.cpu", res.get("cpu", 1.0)),
        gpu=_number("resources.gpu", res.get("gpu", 0.0)),
        custom={str(k): _number(f"resources.custom.{k}", v) for k, v in res.get("custom", {}).items()},
        workers=_number("resources.workers", res.get("workers", 1), int),
        cpu_per_worker=_number("resources.cpu_per_worker", res.get("cpu_per_worker", 1.0)),
        gpu_per_worker=_number("resources.gpu_per_worker", res.get("gpu_per_worker", 0.0)),
    )
    check_workers(spec.resources, res)
    if spec.resources.cpu <= 0 or spec.resources.gpu < 0:
        raise ConfigError("resources", "cpu must be positive and gpu non-negative")
    if spec.resources.gpu > 1:
        # A trial trains in one process on one device: a second GPU would sit idle without a word (#17).
        raise ConfigError("resources.gpu", f"{spec.resources.gpu:g} GPUs per trial: a trial trains in one process "
                          "on one GPU, so all but one would idle; use at most 1 (fractions share a GPU); for "
                          "data-parallel training of one configuration: ecg-tune pretrain --workers N --gpu-per-worker 1")

    sched = doc.get("scheduler", "asha")
    if sched not in SCHEDULERS:
        raise ConfigError("scheduler", f"unknown scheduler {sched!r}; known: {', '.join(SCHEDULERS)}")
    spec.scheduler = sched

    srch = _require_mapping("searcher", doc.get("searcher", {}))
    _check_keys("searcher", srch, {"sampler", "seed", "n_startup_trials"})
    spec.searcher = Searcher(**srch)
    for key in ("seed", "n_startup_trials"):
        value = getattr(spec.searcher, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"searcher.{key}", f"expected a non-negative integer, got {value!r}")
    if spec.searcher.sampler not in SAMPLERS:
        raise ConfigError("searcher.sampler", f"unknown sampler; known: {', '.join(SAMPLERS)}")

    spec.fixed = dict(_require_mapping("fixed", doc.get("fixed", {})))
    spec.space = _parse_space("space", doc.get("space", {}))

    if "ablation" in doc:
        abl = _require_mapping("ablation", doc["ablation"])
        _check_keys("ablation", abl, {"baseline", "factors", "design", "seeds"})
        factors = _require_mapping("ablation.factors", abl.get("factors", {}))
        for k, levels in factors.items():
            if not isinstance(levels, list) or not levels:
                raise ConfigError(f"ablation.factors.{k}", "expected a non-empty list of levels")
        design = abl.get("design", "one_at_a_time")
        if design not in ("one_at_a_time", "full_factorial"):
            raise ConfigError("ablation.design", "must be one_at_a_time or full_factorial")
        seeds = abl.get("seeds", [0])
        if isinstance(seeds, int):
            seeds = list(range(seeds))
        spec.ablation = Ablation(
            baseline=dict(_require_mapping("ablation.baseline", abl.get("baseline", {}))),
            factors={str(k): list(v) for k, v in factors.items()},
            design=design,
            seeds=[_number("ablation.seeds", s, int) for s in seeds],
        )
        if spec.space:
            raise ConfigError("space", "an ablation sweep takes its configs from ablation:, not space:")
    SCHEDULERS[spec.effective_scheduler].check(spec)
    validate(spec)
    return spec


def load_spec(path: str | Path) -> SweepSpec:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "search-space file not found")
    text = path.read_text()
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:  # includes tags that would construct Python objects
        detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise ConfigError(str(path), f"not valid (safe) YAML: {detail}") from None
    return parse_spec(doc, base_dir=str(path.parent.resolve()), source_text=text)

