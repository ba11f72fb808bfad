"""Typed trial configuration with the paper's defaults, and its flat dotted-key form.

`TrialConfig` is a tree of dataclasses. Its flat form (`to_flat` / `from_flat`) has one key per knob:
`method.name`, `method.temperature`, `encoder.name`, `augment.pipeline`, `augment.timeout.min_fraction`,
`optim.lr`, `seed`, ... That flat dict is what Optuna samples, what Ray hands a trial and what MLflow
shows as params. Method, encoder and augmentation parameters live in `params` dicts because each
implementation declares its own parameter dataclass next to its code (one file per concept); they are
checked against that dataclass when the object is built (`ecg_tune.ssl.*.build_*`).

Lists are written as comma-separated strings in the flat form, so every flat value is a scalar that
Optuna, Ray and MLflow all accept.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from ecg_tune.errors import ConfigError


@dataclass
class DataConfig:
    pretrain: list[str] = field(default_factory=list)  # shard datasets (paths/URIs), mixed for pretraining
    downstream: str = ""  # PTB-XL-like shard dataset with folds 1-10 for probes and protocols
    label_set: str = "all"  # all | diagnostic | subdiagnostic | superdiagnostic | form | rhythm
    window: int = 250  # 2.5 s at 100 Hz; CPC pretrains on whole records (see method)
    eval_stride: int = 125
    aggregate: str = "mean"  # record score from window scores: mean | max
    normalize: bool = False  # per-lead z-score with the paper's fixed PTB-XL statistics (data/normalization.py)
    leads: str = ""  # comma-separated subset of lead names; "" = all leads of the dataset
    exclude_leakage: bool = True  # drop downstream val/test records (id or signal hash) from pretraining
    max_pretrain_records: int = 0  # 0 = all
    # memory: load the pretraining corpora into one in-memory store; stream: read shards row group by
    # row group (data/stream.py); auto: stream when the corpora exceed memory_budget_gb (and say so)
    mode: str = "auto"
    memory_budget_gb: float = 0.0  # 0 = a quarter of this node's RAM
    shuffle_buffer: int = 8192  # streaming: windows in the shuffle buffer of each loader worker
    pretrain_weights: list[float] = field(default_factory=list)  # streaming: corpus mix; [] = by size
    stream_cache: str = ""  # streaming: node-local cache, shards decoded to int16 (+ remote copies); "" = none
    stream_workers: int = 1  # streaming: loader workers per rank (each reads its own slice)


@dataclass
class MethodConfig:
    name: str = "simclr"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class EncoderConfig:
    name: str = "xresnet1d50"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class AugmentConfig:
    # The paper's best pair (README commands of the reference code): RandomResizedCrop then TimeOut.
    pipeline: list[str] = field(default_factory=lambda: ["random_resized_crop", "timeout"])
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # augmentation name -> its params


@dataclass
class OptimConfig:
    name: str = "adam"  # adam | adamw
    lr: float = 0.00229  # SimCLR/BYOL config value of the paper's code
    weight_decay: float = 1e-6
    # >= 0: the weight decay follows a cosine from weight_decay (step 0) to this value (the last step),
    # as I-JEPA and ECG-JEPA train (0.04 -> 0.4, 0.01 -> 0.1); < 0: constant weight_decay
    weight_decay_end: float = -1.0
    schedule: str = "warmup_cosine"  # warmup_cosine | constant
    warmup_epochs: float = 1.0
    grad_clip: float = 0.0  # 0 = off


@dataclass
class TrainConfig:
    epochs: int = 100  # the paper ran 2000 (SimCLR/BYOL/SwAV) / 1000 (CPC) epochs on a V100
    batch_size: int = 256  # the paper used 4096 (contrastive) / 32 (CPC)
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    compile: bool = False  # torch.compile of the encoder(s), any device (CPU needs g++ and Python headers)
    steps_per_epoch: int = 0  # 0 = one random window per record per epoch
    checkpoint_every: int = 1  # epochs
    # Data-parallel BatchNorm: auto = the method's policy (global for SimCLR/BYOL/SwAV, per rank for a
    # per-sample loss), on = over the global batch, off = each rank's slice (far fewer collectives: the
    # faster choice on CPU workers, at the cost of the global-batch semantics), shuffle = each rank's
    # slice, a sample's second view normalised in a random sub-batch of the global batch (MoCo's
    # shuffling BatchNorm: no leak between a positive pair through shared statistics, three small
    # collectives per extra view instead of two per layer; SimCLR, BYOL; docs/benchmarks.md §11).
    sync_batchnorm: str = "auto"


@dataclass
class EvalConfig:
    protocols: list[str] = field(default_factory=lambda: ["linear"])  # run at the end of a trial
    probe_every: int = 1  # epochs between quick linear probes on fold 9 (the scheduler's metric)
    probe_epochs: int = 5
    probe_max_records: int = 0  # 0 = all training records of the probe
    batch_size: int = 128
    linear_epochs: int = 50
    linear_lr: float = 4e-3  # 8e-3 * bs/256 at bs 128
    linear_weight_decay: float = 0.1
    finetune_head_epochs: int = 0
    finetune_epochs: int = 50
    finetune_lr: float = 1e-2
    finetune_weight_decay: float = 0.1
    finetune_discriminative_factor: float = 0.25  # lr divided by 4 per layer group from the output side
    bootstrap: int = 1000  # resamples of test records for the 95% CI
    noise_levels: list[str] = field(default_factory=lambda: ["L1", "L2", "L3", "L4", "L5", "L6"])
    label_folds: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    # label-efficiency and noise curves train this protocol: finetune (as the paper's figures) | linear
    curve_protocol: str = "finetune"
    # auto: the encoder's evaluation recipe (ssl/encoders/recipe.py, e.g. CPC's §6.2 lrs, epochs and 2FC
    # head) replaces the keys above that are left at these generic §6.1 values; none: use them as given.
    recipe: str = "auto"
    # An epoch draws passes of one window per training record until it has made this many optimiser
    # steps: on small training sets (hundreds of records) two steps per epoch leave a head untrained.
    min_steps_per_epoch: int = 20


@dataclass
class TrialConfig:
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0

    def to_flat(self) -> dict[str, Any]:
        return to_flat(self)

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> TrialConfig:
        return from_flat(flat)

    def replace(self, **flat_overrides: Any) -> TrialConfig:
        """A copy with dotted-key overrides, e.g. `cfg.replace(**{"optim.lr": 1e-3})`."""
        flat = self.to_flat()
        flat.update(flat_overrides)
        return from_flat(flat)


_SECTIONS = {
    "data": DataConfig,
    "method": MethodConfig,
    "encoder": EncoderConfig,
    "augment": AugmentConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "evaluation": EvalConfig,
}
_OPEN_SECTIONS = {"method", "encoder"}  # any other key goes to params (checked by the implementation)


def _join(value: list[Any] | tuple[Any, ...]) -> str:
    return ",".join(str(v) for v in value)


def to_flat(cfg: TrialConfig) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section in _SECTIONS:
        obj = getattr(cfg, section)
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.name == "params" and section in _OPEN_SECTIONS:
                for k, v in sorted(value.items()):
                    flat[f"{section}.{k}"] = _join(v) if isinstance(v, list | tuple) else v
            elif f.name == "params" and section == "augment":
                for aug, params in sorted(value.items()):
                    for k, v in sorted(params.items()):
                        flat[f"augment.{aug}.{k}"] = _join(v) if isinstance(v, list | tuple) else v
            elif isinstance(value, list):
                flat[f"{section}.{f.name}"] = _join(value)
            else:
                flat[f"{section}.{f.name}"] = value
    flat["seed"] = cfg.seed
    return flat


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def coerce(key: str, value: Any, annotation: Any) -> Any:
    """Convert a YAML/Optuna/MLflow scalar to the annotated field type, or raise ConfigError(key)."""
    origin = typing.get_origin(annotation)
    if origin in (list,):
        (item_type,) = typing.get_args(annotation)
        if isinstance(value, str):
            items: list[Any] = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, list | tuple):
            items = list(value)
        else:
            items = [value]
        return [coerce(key, v, item_type) for v in items]
    if origin in (types.UnionType, typing.Union):
        raise ConfigError(key, "union-typed config fields are not supported")
    try:
        if annotation is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "1", "yes"):
                    return True
                if value.lower() in ("false", "0", "no"):
                    return False
                raise ValueError(value)
            if isinstance(value, int | float) and value in (0, 1):
                return bool(value)
            if isinstance(value, bool):
                return value
            raise ValueError(value)
        if annotation is int:
            if isinstance(value, bool):
                raise ValueError(value)
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if annotation is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if annotation is str:
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                raise ValueError(value)
            return str(value)
    except (TypeError, ValueError):
        name = getattr(annotation, "__name__", str(annotation))
        raise ConfigError(key, f"expected {name}, got {value!r}") from None
    return value


def from_flat(flat: dict[str, Any]) -> TrialConfig:
    """Build a TrialConfig from dotted keys; unknown fixed keys raise ConfigError naming the key."""
    cfg = TrialConfig()
    for key, value in flat.items():
        if key == "seed":
            cfg.seed = coerce(key, value, int)
            continue
        section, _, rest = key.partition(".")
        if section not in _SECTIONS or not rest:
            raise ConfigError(key, f"unknown config key; sections are {', '.join(_SECTIONS)} and seed")
        obj = getattr(cfg, section)
        hints = _field_types(type(obj))
        if section == "augment" and rest != "pipeline":
            aug, _, param = rest.partition(".")
            if not param:
                raise ConfigError(key, "expected augment.pipeline or augment.<augmentation>.<param>")
            obj.params.setdefault(aug, {})[param] = value
        elif rest in hints and rest != "params":
            setattr(obj, rest, coerce(key, value, hints[rest]))
        elif section in _OPEN_SECTIONS:
            obj.params[rest] = value
        else:
            known = ", ".join(f"{section}.{n}" for n in hints if n != "params")
            raise ConfigError(key, f"unknown config key; known keys of {section!r}: {known}")
    return cfg


# (key, bound, strict): every numeric knob's lower bound, in one place (sweeps, pretrain, evaluate).
RANGES: list[tuple[str, float, bool]] = [
    ("optim.lr", 0.0, True), ("optim.weight_decay", 0.0, False), ("optim.warmup_epochs", 0.0, False),
    ("optim.grad_clip", 0.0, False), ("train.epochs", 1, False), ("train.batch_size", 1, False),
    ("train.steps_per_epoch", 0, False), ("train.checkpoint_every", 1, False), ("data.window", 16, False),
    ("data.eval_stride", 1, False), ("data.max_pretrain_records", 0, False), ("data.memory_budget_gb", 0.0, False),
    ("data.shuffle_buffer", 1, False), ("data.stream_workers", 1, False), ("evaluation.probe_every", 1, False),
    ("evaluation.probe_epochs", 1, False), ("evaluation.probe_max_records", 0, False),
    ("evaluation.batch_size", 1, False), ("evaluation.linear_epochs", 1, False), ("evaluation.linear_lr", 0.0, True),
    ("evaluation.linear_weight_decay", 0.0, False), ("evaluation.finetune_head_epochs", 0, False),
    ("evaluation.finetune_epochs", 1, False), ("evaluation.finetune_lr", 0.0, True),
    ("evaluation.finetune_weight_decay", 0.0, False), ("evaluation.finetune_discriminative_factor", 0.0, True),
    ("evaluation.bootstrap", 0, False), ("evaluation.min_steps_per_epoch", 1, False),
]
# Upper bounds where a larger value is a typo, not a choice (an lr of 5 diverges at once).
UPPER: list[tuple[str, float]] = [
    ("optim.lr", 1.0), ("evaluation.linear_lr", 1.0), ("evaluation.finetune_lr", 1.0),
    ("evaluation.finetune_discriminative_factor", 1.0),
]
CHOICES: dict[str, tuple[str, ...]] = {
    "data.mode": ("auto", "memory", "stream"),
    "evaluation.curve_protocol": ("finetune", "linear"),
    "evaluation.recipe": ("auto", "none"),
    "train.sync_batchnorm": ("auto", "on", "off", "shuffle"),
}


def check_ranges(cfg: TrialConfig) -> None:
    """Raise ConfigError(key) for a knob outside its range (e.g. train.epochs=0, optim.lr=5)."""
    flat = cfg.to_flat()
    for key, low, strict in RANGES:
        value = flat[key]
        if (value <= low) if strict else (value < low):
            raise ConfigError(key, f"must be {'above' if strict else 'at least'} {low:g}, got {value}")
    for key, high in UPPER:
        if flat[key] > high:
            raise ConfigError(key, f"must be at most {high:g}, got {flat[key]}")
    for key, allowed in CHOICES.items():
        if flat[key] not in allowed:
            raise ConfigError(key, f"must be one of {', '.join(allowed)}, got {flat[key]!r}")


def check_params(kind_key: str, params_cls: type, params: dict[str, Any]) -> Any:
    """Instantiate an implementation's parameter dataclass from a params dict, naming any bad key.

    `kind_key` is the dotted prefix used in messages, e.g. "method" or "augment.timeout".
    """
    hints = _field_types(params_cls)
    known = {f.name for f in dataclasses.fields(params_cls)}
    values = {}
    for k, v in params.items():
        if k not in known:
            raise ConfigError(
                f"{kind_key}.{k}", f"unknown parameter; known: {', '.join(sorted(known)) or '(none)'}"
            )
        values[k] = coerce(f"{kind_key}.{k}", v, hints[k])
    return params_cls(**values)
