"""Baselines of a freshly initialised encoder (§6.3): trained from scratch, or frozen at random."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ecg_tune.evaluate import runner
from ecg_tune.evaluate.protocols.base import FINETUNE_KEYS, LINEAR_KEYS, Protocol, ProtocolSetup
from ecg_tune.evaluate.results import ProtocolResult


def run_fresh(
    protocol: str, spec: Any, params: dict[str, Any] | None, dataset: Any, setup: ProtocolSetup
) -> ProtocolResult:
    """`supervised` (finetune every layer at finetune_lr) or `random` (linear head on the frozen
    encoder) on a seeded fresh encoder of the architecture `spec` names (see `runner.fresh_encoder`)."""
    if dataset is None:
        raise TypeError(f"{protocol}() needs a dataset")
    if isinstance(spec, str) and runner.is_encoder_name(spec):
        spec = (spec, params or {})
    elif isinstance(spec, str | Path):
        from ecg_tune.ssl.checkpoint import load_checkpoint

        spec = load_checkpoint(spec)
    header = getattr(spec, "header", None)
    task = runner.task_for(header, dataset, setup.label_set, setup.data_cfg, setup.device)
    encoder, name = runner.fresh_encoder(spec, task, setup.seed)
    runner.check_leads(encoder, task)
    recipe = runner.recipe_for(encoder, None)
    cfg = runner.resolve(setup.eval_cfg, recipe)
    if protocol == "random":
        return runner.linear_on_task(encoder, task, cfg, setup.seed, "random", name)
    return runner.finetune_on_task(encoder, task, cfg, setup.seed, "supervised", name, recipe)


class Supervised(Protocol):
    """Training from scratch: a fresh encoder of the model's architecture, every layer at finetune_lr."""

    uses = FINETUNE_KEYS

    def run(self, model: Any, dataset: Any, setup: ProtocolSetup) -> ProtocolResult:
        return run_fresh("supervised", model, None, dataset, setup)


class Random(Protocol):
    """Linear evaluation of a frozen, randomly initialised encoder of the model's architecture."""

    uses = LINEAR_KEYS

    def run(self, model: Any, dataset: Any, setup: ProtocolSetup) -> ProtocolResult:
        return run_fresh("random", model, None, dataset, setup)
