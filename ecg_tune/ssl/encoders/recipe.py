"""Evaluation recipes: how the paper evaluates an encoder architecture (paper notes §6).

An encoder class carries its recipe (`Encoder.eval_recipe`), so evaluation asks the encoder instead
of checking which architecture it got. A recipe names the classifier head used when the encoder is
finetuned or trained from scratch, and the `evaluation.*` values that differ from the generic
(xresnet1d50, §6.1) defaults of `EvalConfig`. Linear evaluation always uses a linear head: that is
what the protocol measures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

HEADS = ("linear", "mlp2")


@dataclass(frozen=True)
class EvalRecipe:
    name: str = "xresnet"  # recorded in every result's settings
    head: str = "linear"  # finetune / supervised head: linear | mlp2 (the paper's CPC "2FC" head)
    head_hidden: int = 512  # mlp2: hidden width (lin_ftrs_head=[512])
    head_dropout: float = 0.5  # mlp2: dropout before the output layer; half of it before the hidden one
    defaults: dict[str, Any] = field(default_factory=dict)  # evaluation.<key> -> value

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"recipe {self.name!r}: head must be one of {HEADS}, got {self.head!r}")


XRESNET = EvalRecipe()

# §6.2: head-only 50 epochs at 1e-3, then 20 epochs of finetuning at 1e-4 with discriminative factor 0.1
# (head 1e-4, LSTM 1e-5, local encoder 1e-6), AdamW weight decay 1e-3, constant lr, 2FC head.
CPC = EvalRecipe(
    name="cpc",
    head="mlp2",
    defaults={
        "linear_lr": 1e-3,
        "linear_weight_decay": 1e-3,
        "finetune_head_epochs": 50,
        "finetune_epochs": 20,
        "finetune_lr": 1e-4,
        "finetune_weight_decay": 1e-3,
        "finetune_discriminative_factor": 0.1,
    },
)
