"""Finetuning: optional head-only epochs, then all layers with discriminative learning rates."""

from __future__ import annotations

import copy
from typing import Any

from ecg_tune.evaluate import runner
from ecg_tune.evaluate.protocols.base import FINETUNE_KEYS, Protocol, ProtocolSetup
from ecg_tune.evaluate.results import ProtocolResult


class Finetune(Protocol):
    """Head-only epochs, then every layer with discriminative lrs; fold-9 selection, fold-10 test AUC."""

    uses = FINETUNE_KEYS

    def run(self, model: Any, dataset: Any, setup: ProtocolSetup) -> ProtocolResult:
        trained, header = runner.source(model)
        task = runner.task_for(header, dataset, setup.label_set, setup.data_cfg, setup.device)
        runner.check_leads(trained, task)
        name = runner.encoder_name(trained, header)
        recipe = runner.recipe_for(trained, header)
        cfg = runner.resolve(setup.eval_cfg, recipe)
        return runner.finetune_on_task(copy.deepcopy(trained), task, cfg, setup.seed, "finetune", name, recipe)
