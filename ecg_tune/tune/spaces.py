"""Search-space YAML → validated `SweepSpec` → a picklable Optuna define-by-run `SearchSpace`.

The schema is documented in `search_spaces/README.md`. Every error names the key path
(`space.method.name.simclr.method.temperature: low (2.0) must be below high (1.0)`) and is raised
before Ray starts. YAML is loaded with `yaml.safe_load` only, so tags that would construct Python
objects are refused.

`SearchSpace` is a plain importable class (never a lambda or a function in `__main__`), because Ray's
OptunaSearch pickles it into the experiment state and `ecg-tune resume` unpickles it in another
process (platform notes §2.2.5).
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ecg_tune.config import TrialConfig, check_params, check_ranges, from_flat
from ecg_tune.errors import ConfigError
from ecg_tune.plugins import PROTOCOLS, SAMPLERS, SCHEDULERS

OBJECTIVE_METRICS = ("probe_auc", "loss")
# Budgets beyond these are typos or runaway loops (1e9 trials kept launching failing trials until killed).
MAX_TRIALS = 10_000
MAX_CONCURRENT = 1_024
MAX_EPOCHS = 10_000
_TEST_METRIC = re.compile(r"(^|[._-])(test|fold_?10)", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")


def check_name(key: str, name: Any) -> str:
    """A sweep name (YAML `name` and `--name` alike): one folder below --storage, never a path out of it."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(key, "a sweep needs a non-empty name")
    if "/" in name or "\\" in name or name in (".", "..") or ".." in name or Path(name).is_absolute():
        raise ConfigError(key, f"{name!r}: a sweep name is one folder name, without '/', '\\' or '..'")
    if not _NAME.match(name):
        raise ConfigError(key, f"{name!r}: use letters, digits and . _ + - (at most 200, starting with a letter or digit)")
    return name


def check_objective(metric: str, key: str = "objective.metric") -> None:
    """Selection (objective, scheduler metric, searcher input: all the same key) never on the test fold."""
    if _TEST_METRIC.search(metric):
        raise ConfigError(key, f"{metric!r} is measured on the test fold (PTB-XL fold 10); selecting on it would "
                               "leak the test set into the search: use probe_auc or a fold-9 metric "
                               "(<protocol>.val_auc); test metrics are reported for the chosen trials only")


# ---------------------------------------------------------------- space nodes
@dataclass
class FloatParam:
    key: str
    low: float
    high: float
    log: bool = False
    step: float | None = None


@dataclass
class IntParam:
    key: str
    low: int
    high: int
    log: bool = False
    step: int = 1


@dataclass
class ChoiceParam:
    key: str
    choices: list[Any]


@dataclass
class BranchParam:
    """Categorical over option names; the chosen option's sub-space is sampled next."""

    key: str
    options: dict[str, list[Node]]


@dataclass
class SubsetParam:
    """An ordered subset of options (e.g. augmentations), each with its own sub-space of strengths.

    The value is the comma-joined names of the chosen options, in the order written in the YAML.
    """

    key: str
    options: dict[str, list[Node]]
    min_size: int = 1


@dataclass
class FixedParam:
    key: str
    value: Any


Node = FloatParam | IntParam | ChoiceParam | BranchParam | SubsetParam | FixedParam


# ---------------------------------------------------------------- sweep spec
@dataclass
class Objective:
    metric: str = "probe_auc"
    mode: str = "max"


@dataclass
class Budget:
    trials: int = 10
    max_epochs: int = 10
    grace_period: int = 1
    reduction_factor: int = 2
    time_budget_s: float | None = None
    max_concurrent: int = 0  # 0 = as many as resources allow
    perturbation_interval: int = 2  # pbt: epochs between exploit/explore steps


@dataclass
class Resources:
    cpu: float = 1.0
    gpu: float = 0.0
    custom: dict[str, float] = field(default_factory=dict)


@dataclass
class Searcher:
    sampler: str = "tpe"
    seed: int = 0
    n_startup_trials: int = 10


@dataclass
class Ablation:
    baseline: dict[str, Any]
    factors: dict[str, list[Any]]
    design: str = "one_at_a_time"  # one_at_a_time | full_factorial
    seeds: list[int] = field(default_factory=lambda: [0])

    @staticmethod
    def level(key: str, value: Any) -> tuple[str, dict[str, Any]]:
        """A factor level: a scalar for the config key `key`, or a bundle of flat overrides.

        A bundle (a mapping) changes several keys together, e.g. a method with its optimiser
        settings; its `name` entry (optional) labels the cell.
        """
        if isinstance(value, dict):
            over = {k: v for k, v in value.items() if k != "name"}
            return str(value.get("name", ",".join(f"{k}={v}" for k, v in over.items()))), over
        return f"{key}={value}", {key: value}

    def cells(self) -> list[tuple[str, dict[str, Any]]]:
        """(cell name, flat overrides) for every cell, the baseline first."""
        cells: list[tuple[str, dict[str, Any]]] = [("baseline", {})]
        if self.design == "one_at_a_time":
            for key, levels in self.factors.items():
                for value in levels:
                    label, over = self.level(key, value)
                    if any(self.baseline.get(k) != v for k, v in over.items()):
                        cells.append((label, over))
        else:
            keys = list(self.factors)
            for combo in itertools.product(*(self.factors[k] for k in keys)):
                labels, over = [], {}
                for k, v in zip(keys, combo):
                    label, o = self.level(k, v)
                    if any(self.baseline.get(kk) != vv for kk, vv in o.items()):
                        labels.append(label)
                        over.update(o)
                if over:
                    cells.append((",".join(labels), over))
        return cells

    def grid(self) -> list[dict[str, Any]]:
        """One flat config per (cell, seed), with `_cell` naming the cell."""
        configs = []
        for name, over in self.cells():
            for seed in self.seeds:
                configs.append({**self.baseline, **over, "seed": seed, "_cell": name})
        return configs


@dataclass
class SweepSpec:
    name: str
    corpora: dict[str, str] = field(default_factory=dict)
    pretrain: list[str] = field(default_factory=list)
    downstream: str = ""
    objective: Objective = field(default_factory=Objective)
    budget: Budget = field(default_factory=Budget)
    resources: Resources = field(default_factory=Resources)
    scheduler: str = "asha"
    searcher: Searcher = field(default_factory=Searcher)
    fixed: dict[str, Any] = field(default_factory=dict)
    space: list[Node] = field(default_factory=list)
    ablation: Ablation | None = None
    source_text: str = ""  # the YAML as written, logged to MLflow
    base_dir: str = "."  # relative data paths are resolved against the YAML's folder

    @property
    def effective_scheduler(self) -> str:
        """The scheduler that runs: an ablation grid always uses fifo (every cell trains fully, so
        their confidence intervals compare full budgets), whatever `scheduler:` says."""
        return "fifo" if self.ablation is not None else self.scheduler

    def fixed_flat(self) -> dict[str, Any]:
        """Keys every trial gets, before sampling: data paths, budget-derived epochs, `fixed`."""
        flat: dict[str, Any] = {
            "data.pretrain": ",".join(self.resolve_corpus(c) for c in self.pretrain),
            "data.downstream": self.resolve_path(self.downstream) if self.downstream else "",
            "train.epochs": self.budget.max_epochs,
        }
        flat.update(self.fixed)
        if "data.pretrain" in self.fixed:
            flat["data.pretrain"] = self.resolve_pretrain(self.fixed["data.pretrain"])
        return flat

    def resolve_path(self, path: str) -> str:
        if "://" in path or Path(path).is_absolute():
            return path
        return str((Path(self.base_dir) / path).resolve())

    def resolve_corpus(self, name: str) -> str:
        return self.resolve_path(self.corpora.get(name, name))

    def resolve_pretrain(self, value: Any) -> str:
        """`data.pretrain` values may name corpora (`cinc,chapman`); they become paths."""
        names = value.split(",") if isinstance(value, str) else list(value)
        return ",".join(self.resolve_corpus(n.strip()) for n in names if n.strip())


# ---------------------------------------------------------------- parsing
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

    obj = _require_mapping("objective", doc.get("objective", {}))
    _check_keys("objective", obj, {"metric", "mode"})
    spec.objective = Objective(**obj)
    if not isinstance(spec.objective.metric, str):
        raise ConfigError("objective.metric", f"expected a metric name, got {spec.objective.metric!r}")
    if spec.objective.mode not in ("max", "min"):
        raise ConfigError("objective.mode", "must be max or min")
    check_objective(spec.objective.metric)
    if spec.objective.metric not in OBJECTIVE_METRICS and "." not in spec.objective.metric:
        raise ConfigError(
            "objective.metric",
            f"unknown metric {spec.objective.metric!r}; use {', '.join(OBJECTIVE_METRICS)} or <protocol>.<metric>",
        )

    budget = _require_mapping("budget", doc.get("budget", {}))
    _check_keys("budget", budget, {f for f in Budget.__dataclass_fields__})
    b = Budget()
    for k, v in budget.items():
        kind = float if k == "time_budget_s" else int
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
    if b.perturbation_interval < 1:
        raise ConfigError("budget.perturbation_interval", "must be at least 1 epoch")
    spec.budget = b

    res = _require_mapping("resources", doc.get("resources", {}))
    _check_keys("resources", res, {"cpu", "gpu", "custom"})
    _require_mapping("resources.custom", res.get("custom", {}))
    spec.resources = Resources(
        cpu=_number("resources.cpu", res.get("cpu", 1.0)),
        gpu=_number("resources.gpu", res.get("gpu", 0.0)),
        custom={str(k): _number(f"resources.custom.{k}", v) for k, v in res.get("custom", {}).items()},
    )
    if spec.resources.cpu <= 0 or spec.resources.gpu < 0:
        raise ConfigError("resources", "cpu must be positive and gpu non-negative")
    if spec.resources.gpu > 1 and not float(spec.resources.gpu).is_integer():
        raise ConfigError("resources.gpu", "above 1, GPUs per trial must be a whole number")

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
    if spec.effective_scheduler == "pbt":
        if 0 < spec.budget.max_concurrent < spec.budget.trials:
            raise ConfigError("budget.max_concurrent", "pbt trains its population together (members exploit each "
                                                       "other); a smaller limit would run it in separate batches: use 0")
        if not pbt_mutations(spec.space):
            raise ConfigError("scheduler", "pbt explores by mutating float parameters at the top level of space: "
                                           "(e.g. optim.lr: {float: [1e-4, 1e-2], log: true}); this space has none")
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


# ---------------------------------------------------------------- validation
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


# (key, lowest allowed, strict): values a trial could not run with.
def validate(spec: SweepSpec) -> None:
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


# ---------------------------------------------------------------- sampling
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


def subset_flag(key: str, option: str) -> str:
    """Optuna parameter name of a subset member's on/off switch (not a config key: trials drop it)."""
    return f"{key}?{option}"


GRID_KEY = "cell"  # ablation trials get their whole flat config under this key (a tune.grid_search value)


def unwrap(config: dict[str, Any]) -> dict[str, Any]:
    """A Ray trial config as one flat dict, whether it came from the searcher or an ablation grid."""
    cell = config.get(GRID_KEY)
    return {**{k: v for k, v in config.items() if k != GRID_KEY}, **cell} if isinstance(cell, dict) else config


def trial_config(config: dict[str, Any]) -> dict[str, Any]:
    """The flat TrialConfig keys of a Ray trial config (drops subset switches and private keys)."""
    return {k: v for k, v in unwrap(config).items() if "?" not in k and not k.startswith("_")}
