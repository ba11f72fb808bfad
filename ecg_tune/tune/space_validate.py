"""Validation of a parsed sweep spec: every branch combination (or ablation cell) is built into a
`TrialConfig` and checked down to the plug-ins' parameters before Ray starts; errors name the YAML key."""

from __future__ import annotations

from typing import Any

from ecg_tune.config import TrialConfig, check_params, check_ranges, from_flat
from ecg_tune.errors import ConfigError
from ecg_tune.plugins import PROTOCOLS
from ecg_tune.tune.space_schema import (
    Ablation,
    BranchParam,
    ChoiceParam,
    FixedParam,
    FloatParam,
    IntParam,
    Node,
    Resources,
    SweepSpec,
)


def _branch_configs(nodes: list[Node], path: str) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """Representative flat configs, one per combination of branch options (each param at its low end).

    Returns (flat values, key → YAML path) pairs so validation errors can name the YAML key path.
    """
    combos: list[tuple[dict[str, Any], dict[str, str]]] = [({}, {})]
    for node in nodes:
        node_path = f"{path}.{node.key}"
        if isinstance(node, FixedParam):
            options = [({node.key: node.value}, {node.key: node_path})]
        elif isinstance(node, FloatParam | IntParam):
            options = [({node.key: node.low}, {node.key: node_path})]
        elif isinstance(node, ChoiceParam):
            options = [({node.key: c}, {node.key: node_path}) for c in node.choices]
        elif isinstance(node, BranchParam):
            options = []
            for opt, sub in node.options.items():
                for flat, paths in _branch_configs(sub, f"{node_path}.branch.{opt}"):
                    options.append(({node.key: opt, **flat}, {node.key: node_path, **paths}))
        else:  # SubsetParam: every option once, and all together
            options = []
            for opt, sub in node.options.items():
                for flat, paths in _branch_configs(sub, f"{node_path}.subset.{opt}"):
                    options.append(({node.key: opt, **flat}, {node.key: node_path, **paths}))
        combos = [({**a, **b}, {**pa, **pb}) for (a, pa) in combos for (b, pb) in options]
        if len(combos) > 512:  # enough to cover every branch; a full product could explode
            combos = combos[:512]
    return combos


def validate_flat(flat: dict[str, Any]) -> TrialConfig:
    """Check a flat trial config down to the implementation parameters; raise ConfigError(key)."""
    from ecg_tune.ssl.augment import AUGMENTATIONS
    from ecg_tune.ssl.encoders import ENCODERS
    from ecg_tune.ssl.methods import METHODS

    cfg = from_flat({k: v for k, v in flat.items() if not k.startswith("_")})
    check_params("method", METHODS[cfg.method.name].Params, cfg.method.params)
    check_params("encoder", ENCODERS[cfg.encoder.name].Params, cfg.encoder.params)
    for name in cfg.augment.pipeline:
        if name not in AUGMENTATIONS:
            raise ConfigError("augment.pipeline", f"unknown augmentation {name!r}; known: {', '.join(AUGMENTATIONS.names())}")
    for name, params in cfg.augment.params.items():
        if name not in AUGMENTATIONS:
            raise ConfigError(f"augment.{name}", f"unknown augmentation; known: {', '.join(AUGMENTATIONS.names())}")
        check_params(f"augment.{name}", AUGMENTATIONS[name].Params, params)
    for p in cfg.evaluation.protocols:
        if p not in PROTOCOLS:
            raise ConfigError("evaluation.protocols", f"unknown protocol {p!r}; known: {', '.join(PROTOCOLS)}")
    check_ranges(cfg)
    if cfg.data.aggregate not in ("mean", "max"):
        raise ConfigError("data.aggregate", "must be mean or max")
    if cfg.optim.name not in ("adam", "adamw"):
        raise ConfigError("optim.name", "must be adam or adamw")
    if cfg.optim.schedule not in ("warmup_cosine", "constant"):
        raise ConfigError("optim.schedule", "must be warmup_cosine or constant")
    if cfg.train.precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ConfigError("train.precision", "must be auto, fp32, bf16 or fp16")
    return cfg




def check_search_goals(spec: SweepSpec) -> None:
    """Several objectives, constraints and a device-hour budget need a searched sweep whose sampler
    supports them (an ablation grid or a PBT population has no searcher to steer or stop)."""
    from ecg_tune.plugins import SAMPLERS, SCHEDULERS

    obj, searched = spec.objective, spec.ablation is None and not SCHEDULERS[spec.effective_scheduler].population
    sampler = SAMPLERS[spec.searcher.sampler] if spec.searcher.sampler in SAMPLERS else None
    if obj.multi or obj.constraints:
        what = "several objectives" if obj.multi else "objective.constraints"
        if not searched:
            raise ConfigError("objective", f"{what} need a searched sweep (not an ablation grid or a PBT population)")
        if sampler is not None and obj.multi and not getattr(sampler, "multi_objective", False):
            good = [n for n in SAMPLERS.names() if getattr(SAMPLERS[n], "multi_objective", False)]
            raise ConfigError("searcher.sampler", f"{spec.searcher.sampler} cannot search several objectives; use {', '.join(good)}")
        if sampler is not None and obj.constraints and not getattr(sampler, "constrained", False):
            good = [n for n in SAMPLERS.names() if getattr(SAMPLERS[n], "constrained", False)]
            raise ConfigError("searcher.sampler", f"{spec.searcher.sampler} ignores constraints; use {', '.join(good)}")
    if spec.budget.device_hours is not None and not searched:
        raise ConfigError("budget.device_hours", "needs a searched sweep: an ablation grid or a PBT population runs "
                                                 "every trial it starts with (use budget.time_budget_s)")


def check_workers(res: Resources, written: dict[str, Any]) -> None:
    """`resources.workers` > 1: a data-parallel trial (Ray Train workers inside the Tune trial)."""
    if res.workers < 1:
        raise ConfigError("resources.workers", f"must be at least 1, got {res.workers}")
    if res.workers == 1:
        for key in ("cpu_per_worker", "gpu_per_worker"):
            if key in written:
                raise ConfigError(f"resources.{key}", "only with resources.workers > 1 (a one-process trial "
                                                      "takes resources.cpu and resources.gpu)")
        return
    if res.cpu_per_worker <= 0:
        raise ConfigError("resources.cpu_per_worker", f"must be positive, got {res.cpu_per_worker:g}")
    g = res.gpu_per_worker
    if g < 0 or (g > 1 and not float(g).is_integer()):
        raise ConfigError("resources.gpu_per_worker", f"must be a fraction up to 1 or a whole number, got {g:g}")
    if res.gpu > 0:
        raise ConfigError("resources.gpu", "with resources.workers > 1 the trial's own process only waits on its "
                                           "workers: give GPUs per worker (resources.gpu_per_worker)")


def validate(spec: SweepSpec) -> None:
    check_search_goals(spec)
    from ecg_tune.plugins import SCHEDULERS

    if spec.resources.workers > 1 and SCHEDULERS[spec.effective_scheduler].population:
        raise ConfigError("resources.workers", "pbt exploits checkpoints between running trials, which a "
                                               "multi-worker trial does not hand over: use workers: 1 with pbt, "
                                               "or asha/fifo with workers > 1")
    fixed = spec.fixed_flat()
    for key in spec.fixed:
        try:
            from_flat({key: spec.fixed[key]})
        except ConfigError as exc:
            raise ConfigError(f"fixed.{key}", exc.reason) from None
    if spec.ablation is not None:
        checks = [(f"ablation.baseline.{k}", k, v) for k, v in spec.ablation.baseline.items()]
        for factor, levels in spec.ablation.factors.items():
            for i, value in enumerate(levels):
                _, over = Ablation.level(factor, value)
                checks += [(f"ablation.factors.{factor}[{i}].{k}" if isinstance(value, dict) else f"ablation.factors.{factor}", k, v) for k, v in over.items()]
        for path, key, value in checks:
            if key == "seed":
                continue
            try:
                from_flat({key: value})
            except ConfigError as exc:
                raise ConfigError(path, exc.reason) from None
        for cfg in spec.ablation.grid():
            try:
                validate_flat({**fixed, **cfg})
            except ConfigError as exc:
                raise ConfigError(f"ablation (cell {cfg['_cell']!r}).{exc.key}", exc.reason) from None
        return
    fixed_paths = {k: f"fixed.{k}" for k in spec.fixed}
    for flat, paths in _branch_configs(spec.space, "space"):
        _validate_one({**fixed, **flat}, {**fixed_paths, **paths})


def _validate_one(flat: dict[str, Any], paths: dict[str, str]) -> None:
    try:
        validate_flat(flat)
    except ConfigError as exc:
        # Point at the YAML key that produced the bad value when we know it.
        key = exc.key
        yaml_path = (paths.get(key) or paths.get(f"{key}.name")
                     or next((p for k, p in paths.items() if key.startswith(k)), None))
        raise ConfigError(yaml_path or key, exc.reason) from None

