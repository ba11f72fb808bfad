"""What every evaluation protocol shares: one resolved setup value and the `Protocol` interface.

A protocol is a `Protocol` subclass in its own module of this package plus one line in `PROTOCOLS`
(`ecg_tune/plugins.py`); `run_protocol(name, ...)` looks it up there, and the CLI, search spaces and
reports read the names from the same registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ecg_tune.config import DataConfig, EvalConfig
from ecg_tune.evaluate import runner
from ecg_tune.evaluate.results import CurveResult, ProtocolResult


@dataclass(frozen=True)
class ProtocolSetup:
    """Everything a protocol needs besides the model and the dataset, resolved once (defaults filled)."""

    label_set: str
    eval_cfg: EvalConfig
    data_cfg: DataConfig
    device: str | torch.device = "cpu"
    seed: int = 0

    @classmethod
    def resolve(
        cls,
        label_set: str | None = None,
        eval_cfg: EvalConfig | None = None,
        data_cfg: DataConfig | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ) -> ProtocolSetup:
        """The setup with `data.label_set`, `EvalConfig()` and `DataConfig()` for what is left None."""
        label_set, eval_cfg, data_cfg = runner.defaults(label_set, eval_cfg, data_cfg)
        return cls(label_set, eval_cfg, data_cfg, device, seed)

    def keywords(self) -> dict[str, Any]:
        """The setup as the keyword arguments of the public protocol functions."""
        return {
            "label_set": self.label_set,
            "eval_cfg": self.eval_cfg,
            "data_cfg": self.data_cfg,
            "device": self.device,
            "seed": self.seed,
        }


class Protocol:
    """An evaluation protocol: `run(model, dataset, setup)` -> ProtocolResult or CurveResult.

    `model` is an Encoder, a Checkpoint or a checkpoint path (protocols that train from scratch use only
    its architecture). `uses` names the config keys the protocol reads (shown by `ecg-tune list`).
    """

    uses: ClassVar[tuple[str, ...]] = ()

    def run(self, model: Any, dataset: Any, setup: ProtocolSetup) -> ProtocolResult | CurveResult:
        raise NotImplementedError


LINEAR_KEYS = ("evaluation.linear_epochs", "evaluation.linear_lr", "evaluation.linear_weight_decay")
FINETUNE_KEYS = (
    "evaluation.finetune_head_epochs",
    "evaluation.finetune_epochs",
    "evaluation.finetune_lr",
    "evaluation.finetune_weight_decay",
    "evaluation.finetune_discriminative_factor",
)
