"""Optimiser and per-step learning-rate schedule from an `OptimConfig` (paper notes §4).

Weight decay is applied only to parameters with two or more dimensions (conv kernels, linear weights,
prototypes). One-dimensional parameters — biases and the scales/shifts of BatchNorm/LayerNorm — get none:
decaying them only pulls normalisation layers towards zero output and biases towards the origin, which
regularises nothing useful; the reference code excludes biases and BN parameters the same way
(`exclude_from_wt_decay(skip_list=["bias", "bn"])`). A module can name more parameters that must not
be decayed whatever their shape with a `no_weight_decay()` method returning their names relative to
it (transformers: position and lead embeddings, mask tokens; S4D: the state matrix and step size):
decay would pull them towards zero, which for them means "no position", "no lead" or another
dynamics, not a simpler model. Frozen parameters (`requires_grad=False`, e.g. a
BYOL target network) are not given to the optimiser at all.

The schedule is a `LambdaLR` stepped after every optimiser step: the learning rate of the optimiser step
with index `s` (0-based) is `lr * lr_factor(s, ...)`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ecg_tune.config import OptimConfig
from ecg_tune.errors import ConfigError

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
SCHEDULES = ("warmup_cosine", "constant")
DECAY, NO_DECAY = "decay", "no_decay"  # the names of the two param groups (`group["name"]`)


def no_weight_decay_ids(module: nn.Module) -> set[int]:
    """Ids of the parameters that modules of `module` list in their `no_weight_decay()` (see above)."""
    ids: set[int] = set()
    for sub in module.modules():
        hook = getattr(sub, "no_weight_decay", None)
        if not callable(hook):
            continue
        params = dict(sub.named_parameters())
        for name in hook():
            if name in params:  # a listed buffer (e.g. fixed sine-cosine positions) is not trained at all
                ids.add(id(params[name]))
    return ids


def parameter_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters split into a decayed group (ndim >= 2; named DECAY) and an undecayed one
    (ndim <= 1, or named by a module's `no_weight_decay()`; named NO_DECAY)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    excluded = no_weight_decay_ids(module)
    for param in module.parameters():  # parameters() de-duplicates shared parameters
        if not param.requires_grad:
            continue
        (decay if param.ndim >= 2 and id(param) not in excluded else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "name": DECAY},
        {"params": no_decay, "weight_decay": 0.0, "name": NO_DECAY},
    ]
    return [g for g in groups if g["params"]]


def is_decayed(group: dict) -> bool:
    """Whether an optimiser param group (of `parameter_groups`) takes `optim.weight_decay`: callers that
    change the weight decay later (PBT) ask this instead of repeating the rule above."""
    return group.get("name") == DECAY


def build_optimizer(module: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.name not in OPTIMIZERS:
        raise ConfigError("optim.name", f"unknown optimiser {cfg.name!r}; known: {', '.join(OPTIMIZERS)}")
    if cfg.lr <= 0:
        raise ConfigError("optim.lr", f"learning rate must be positive, got {cfg.lr}")
    if cfg.weight_decay < 0:
        raise ConfigError("optim.weight_decay", f"must be >= 0, got {cfg.weight_decay}")
    groups = parameter_groups(module, cfg.weight_decay)
    if not groups:
        raise ConfigError("method", "the model has no trainable parameters")
    return OPTIMIZERS[cfg.name](groups, lr=cfg.lr)


def warmup_steps(cfg: OptimConfig, steps_per_epoch: int) -> int:
    if cfg.warmup_epochs < 0:
        raise ConfigError("optim.warmup_epochs", f"must be >= 0, got {cfg.warmup_epochs}")
    return int(round(cfg.warmup_epochs * steps_per_epoch))


def lr_factor(step: int, *, schedule: str, warmup: int, total: int) -> float:
    """Multiplier of the base learning rate for the optimiser step with 0-based index `step`.

    `warmup_cosine`: `step / warmup` while `step < warmup` (starts at exactly 0, as the reference
    code's LinearWarmupCosineAnnealingLR with warmup_start_lr=0), then
    `(1 + cos(pi * (step - warmup) / (total - warmup))) / 2`, reaching 0 at `step == total`; steps past
    `total` (training longer than planned) stay at 0.
    `constant`: the same linear warmup (none when `warmup == 0`), then 1.
    """
    if step < warmup:
        return step / warmup
    if schedule == "constant":
        return 1.0
    if schedule == "warmup_cosine":
        span = total - warmup
        if span <= 0:
            return 1.0  # warmup covers the whole run: nothing left to anneal
        progress = min(step - warmup, span) / span
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ConfigError("optim.schedule", f"unknown schedule {schedule!r}; known: {', '.join(SCHEDULES)}")


def weight_decay_at(step: int, cfg: OptimConfig, total: int) -> float:
    """The weight decay of the decayed parameter groups at optimiser step `step` (0-based): constant
    `weight_decay`, or with `weight_decay_end` >= 0 a cosine from `weight_decay` at step 0 to
    `weight_decay_end` at step `total` (I-JEPA's CosineWDSchedule), held there past `total`."""
    if cfg.weight_decay_end < 0:
        return cfg.weight_decay
    progress = min(step, total) / total if total > 0 else 1.0
    return cfg.weight_decay_end + (cfg.weight_decay - cfg.weight_decay_end) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, *, steps_per_epoch: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    if cfg.schedule not in SCHEDULES:
        raise ConfigError("optim.schedule", f"unknown schedule {cfg.schedule!r}; known: {', '.join(SCHEDULES)}")
    warmup = warmup_steps(cfg, steps_per_epoch)
    schedule = cfg.schedule

    def factor(step: int) -> float:
        return lr_factor(step, schedule=schedule, warmup=warmup, total=total_steps)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
