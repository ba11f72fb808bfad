"""Linear evaluation: a Linear head on the frozen encoder (eval mode, BN statistics fixed)."""

from __future__ import annotations

import copy
from typing import Any

from ecg_tune.evaluate import runner
from ecg_tune.evaluate.protocols.base import LINEAR_KEYS, Protocol, ProtocolSetup
from ecg_tune.evaluate.results import ProtocolResult


class Linear(Protocol):
    """Linear head (AdamW, constant lr) on the frozen encoder; fold-9 selection, fold-10 test AUC."""

    uses = LINEAR_KEYS

    def run(self, model: Any, dataset: Any, setup: ProtocolSetup) -> ProtocolResult:
        trained, header = runner.source(model)
        task = runner.task_for(header, dataset, setup.label_set, setup.data_cfg, setup.device)
        runner.check_leads(trained, task)
        name = runner.encoder_name(trained, header)
        cfg = runner.resolve(setup.eval_cfg, runner.recipe_for(trained, header))
        return runner.linear_on_task(copy.deepcopy(trained), task, cfg, setup.seed, "linear", name)
