"""Common interface of self-supervised (and supervised baseline) methods."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ecg_tune.ssl.encoders.base import Encoder

Augment = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Batch:
    x: torch.Tensor  # (B, leads, T), on the training device
    y: torch.Tensor | None = None  # (B, classes) multi-hot, only for supervised training
    groups: torch.Tensor | None = None  # (B,) int64 patient ids (as integers), for methods that ask


class Method(nn.Module):
    """Owns the encoder plus its heads; `encoder` is what evaluation protocols use.

    The trainer calls `on_train_start(total_steps, steps_per_epoch)` once, `on_epoch_start(epoch)`
    each epoch, `training_step(batch, augment)` each step (returns the loss to backpropagate and
    detached metric tensors), and `on_step_end(step, total_steps)` after each optimiser step (EMA
    updates, prototype normalisation). Every piece of state the method needs to continue exactly
    (target network, queues) is a parameter or buffer, so `state_dict()` captures it.
    """

    Params: ClassVar[type]
    needs_labels: ClassVar[bool] = False
    default_encoder: ClassVar[str] = "xresnet1d50"  # what `pretrain` uses when no encoder is named
    # Why `train.compile` cannot help this method ("" = it can): e.g. a training step that calls encoder
    # parts other than `forward`, which a compiled `forward` does not cover. The trainer warns and skips.
    compile_unsupported: ClassVar[str] = ""
    # Data-parallel runs: BatchNorm over the global batch (ssl/global_batchnorm.py) instead of each
    # rank's slice. On by default (SimCLR, BYOL, SwAV train with synchronised BatchNorm; it makes N ranks
    # equal one process on the global batch); a method whose loss is per sample may switch it off.
    sync_batchnorm: ClassVar[bool] = True
    # Whether the method passes its views through `global_batchnorm.encode_views` one view at a time,
    # so that `train.sync_batchnorm: shuffle` can normalise a sample's views on different ranks (SimCLR,
    # BYOL). A method that concatenates its views into one pass (SwAV, CMSC) cannot be shuffled.
    shuffles_views: ClassVar[bool] = False

    @classmethod
    def encoder_defaults(cls, window: int) -> dict[str, Any]:
        """Encoder parameters this method prefers to the encoder's own defaults, for evaluation windows of
        `window` samples. Only those the chosen encoder has are used, and explicit `encoder.*` keys win;
        the resolved values are what the checkpoint header records."""
        return {}

    def __init__(self, encoder: Encoder, params: Any):
        super().__init__()
        self.encoder = encoder
        self.params = params

    @classmethod
    def needs_groups(cls, params: Any) -> bool:
        """Whether batches must carry `groups` (patient ids) under these params (e.g. CMSC with
        same-patient positives); the data layer then builds them from the records' patient ids."""
        return False

    def training_step(self, batch: Batch, augment: Augment) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def window_length(self, default: int) -> int:
        """Samples per training crop. CPC overrides this: it trains on whole 10 s records (1000)."""
        return default

    def compile_targets(self) -> list[nn.Module]:
        """The modules `train.compile` compiles in place: the outermost encoders the method holds (the
        online one and e.g. BYOL's target one). Override to compile other parts (heads, predictors)."""
        return _outermost_encoders(self)

    def on_train_start(self, total_steps: int, steps_per_epoch: int) -> None:
        pass

    def on_epoch_start(self, epoch: int) -> None:
        pass

    def on_step_end(self, step: int, total_steps: int) -> None:
        pass


def _outermost_encoders(module: nn.Module) -> list[nn.Module]:
    found: list[nn.Module] = []
    for child in module.children():
        if isinstance(child, Encoder):
            found.append(child)
        else:
            found.extend(_outermost_encoders(child))
    return found
