"""The search-space schema: the YAML's nodes (`FloatParam` ... `FixedParam`), the sweep spec and its
parts (objective, budget, resources, searcher, ablation), and the names a Ray trial config carries.

Parsing is `tune/spaces.py`, validation `tune/space_validate.py`, sampling `tune/space_sampling.py`.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecg_tune.errors import ConfigError

OBJECTIVE_METRICS = ("probe_auc", "loss")
# What a trial cost (tune/cost.py reports them with every result): objectives and constraints too.
COST_METRICS = ("device_hours", "device_seconds", "cpu_seconds", "peak_memory_mb", "params", "windows_per_s")
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
    """What the searcher optimises. `metric`/`mode` is the first (primary) objective: schedulers and the
    single-objective ranking use it; `more` lists further (metric, mode) pairs of a multi-objective
    search, and `constraints` bounds (metric -> ("max"|"min", bound)) that the sampler honours."""

    metric: str = "probe_auc"
    mode: str = "max"
    more: list[tuple[str, str]] = field(default_factory=list)
    constraints: dict[str, tuple[str, float]] = field(default_factory=dict)

    @property
    def metrics(self) -> list[str]:
        return [self.metric, *(m for m, _ in self.more)]

    @property
    def modes(self) -> list[str]:
        return [self.mode, *(d for _, d in self.more)]

    @property
    def multi(self) -> bool:
        return bool(self.more)


def _check_metric(key: str, metric: Any) -> str:
    if not isinstance(metric, str) or not metric:
        raise ConfigError(key, f"expected a metric name, got {metric!r}")
    check_objective(metric, key)
    if metric not in OBJECTIVE_METRICS and metric not in COST_METRICS and "." not in metric:
        raise ConfigError(key, f"unknown metric {metric!r}; use {', '.join(OBJECTIVE_METRICS + COST_METRICS)} "
                               "or <protocol>.<metric>")
    return metric


def parse_objective(obj: Any) -> Objective:
    """`objective:` as written: {metric, mode} (one objective, as before), {metric: [a, b], mode: [max, min]}
    or a list of {metric, mode}; optional `constraints: {params: {max: 2e6}}` (in the mapping forms)."""
    if obj is None:
        obj = {}
    constraints: Any = {}
    if isinstance(obj, list):
        pairs = []
        for i, item in enumerate(obj):
            if not isinstance(item, dict) or set(item) - {"metric", "mode"}:
                raise ConfigError(f"objective[{i}]", "expected {metric: NAME, mode: max|min}")
            pairs.append((item.get("metric"), item.get("mode", "max")))
    elif isinstance(obj, dict):
        unknown = set(obj) - {"metric", "mode", "constraints"}
        if unknown:
            raise ConfigError(f"objective.{sorted(unknown)[0]}", "unknown key; known: metric, mode, constraints")
        metric, mode = obj.get("metric", "probe_auc"), obj.get("mode", "max")
        if isinstance(metric, list):
            modes = mode if isinstance(mode, list) else [mode] * len(metric)
            if len(modes) != len(metric):
                raise ConfigError("objective.mode", f"{len(metric)} metrics need {len(metric)} modes, got {len(modes)}")
            pairs = list(zip(metric, modes))
        else:
            if isinstance(mode, list):
                raise ConfigError("objective.mode", "a list of modes needs a list of metrics")
            pairs = [(metric, mode)]
        constraints = obj.get("constraints") or {}
    else:
        raise ConfigError("objective", f"expected a mapping or a list, got {obj!r}")
    if not pairs:
        raise ConfigError("objective", "name at least one metric")
    key = "objective.metric" if len(pairs) == 1 else "objective"
    for i, (metric, mode) in enumerate(pairs):
        _check_metric(key if len(pairs) == 1 else f"objective.metric[{i}]", metric)
        if mode not in ("max", "min"):
            raise ConfigError("objective.mode", "must be max or min")
    if len({m for m, _ in pairs}) != len(pairs):
        raise ConfigError("objective.metric", "a metric is listed twice")
    if not isinstance(constraints, dict):
        raise ConfigError("objective.constraints", "expected {metric: {max: N}} or {metric: {min: N}}")
    bounds: dict[str, tuple[str, float]] = {}
    for metric, rule in constraints.items():
        ckey = f"objective.constraints.{metric}"
        _check_metric(ckey, metric)
        if not isinstance(rule, dict) or len(rule) != 1 or next(iter(rule)) not in ("max", "min"):
            raise ConfigError(ckey, "expected {max: N} or {min: N}")
        side, bound = next(iter(rule.items()))
        if isinstance(bound, bool) or not isinstance(bound, int | float):
            raise ConfigError(ckey, f"expected a number, got {bound!r}")
        bounds[str(metric)] = (side, float(bound))
    (metric, mode), more = pairs[0], pairs[1:]
    return Objective(str(metric), str(mode), [(str(m), str(d)) for m, d in more], bounds)


@dataclass
class Budget:
    trials: int = 10
    max_epochs: int = 10
    grace_period: int = 1
    reduction_factor: int = 2
    time_budget_s: float | None = None
    max_concurrent: int = 0  # 0 = as many as resources allow
    perturbation_interval: int = 2  # pbt: epochs between exploit/explore steps
    quantile_fraction: float = 0.25  # pbt: the bottom fraction exploits the top one (Ray's default)
    device_hours: float | None = None  # no new trial once the sweep's trials used this much (tune/cost.py)


@dataclass
class Resources:
    cpu: float = 1.0  # with workers > 1: the trial's driver (it waits on the workers, trains nothing)
    gpu: float = 0.0
    custom: dict[str, float] = field(default_factory=dict)
    workers: int = 1  # > 1: data-parallel Ray Train workers inside the trial (tune/multiworker.py)
    cpu_per_worker: float = 1.0
    gpu_per_worker: float = 0.0

    def per_trial(self) -> dict[str, float]:
        """Everything one trial holds while it runs (its driver and, with workers > 1, its workers)."""
        need = {"CPU": self.cpu, "GPU": self.gpu, **self.custom}
        if self.workers > 1:
            need["CPU"] += self.workers * self.cpu_per_worker
            need["GPU"] += self.workers * self.gpu_per_worker
        return need


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
