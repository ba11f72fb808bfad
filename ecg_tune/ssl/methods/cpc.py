"""Contrastive predictive coding (van den Oord et al. 2018) as in the paper's reference code (notes §4.4)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ecg_tune.errors import ConfigError
from ecg_tune.ssl.encoders.base import Encoder
from ecg_tune.ssl.losses import cpc_infonce, cpc_negative_indices
from ecg_tune.ssl.methods.base import Augment, Batch, Method

NEGATIVE_MODES = ("same_sequence", "batch")


@dataclass
class CPCParams:
    # Predict z_{t+k} for the single offset k = steps_predicted (reference `--steps-predicted`, 12 steps
    # = 120 ms at 100 Hz with the stride-1 encoder), not a sum over 1..k.
    steps_predicted: int = 12
    # True: average the loss over offsets 1..steps_predicted, one projection per offset (CPC paper).
    predict_all_offsets: bool = False
    n_negatives: int = 128
    negatives: str = "same_sequence"  # same_sequence (reference README) | batch (other sequences, any step)
    input_length: int = 1000  # training crop in samples: the whole 10 s record at 100 Hz
    use_augment: bool = False  # the reference pretrains CPC on clean (normalised) records

    def __post_init__(self) -> None:
        for key in ("steps_predicted", "n_negatives", "input_length"):
            if getattr(self, key) < 1:
                raise ConfigError(f"method.{key}", f"must be >= 1, got {getattr(self, key)}")
        if self.negatives not in NEGATIVE_MODES:
            raise ConfigError(
                "method.negatives", f"must be one of {', '.join(NEGATIVE_MODES)}, got {self.negatives!r}"
            )


class CPC(Method):
    """Encoder outputs z_t, autoregressive context c_t, InfoNCE between W c_t and z_{t+k}.

    Needs a sequence encoder (`forward_local`, `forward_context`). The projection W is Linear(context_dim,
    local_dim, no bias). Negatives are drawn with torch's default generator of the batch's device (the
    trainer seeds it and saves/restores its state), so they are reproducible without extra state here.
    The loss is the mean over batch and anchor steps; the reference sums over steps (paper notes 8.11),
    so its logged values are about (T - k) times ours, and its gradient scale differs by the same factor.
    """

    Params = CPCParams
    params: CPCParams
    default_encoder = "cpc_fc"
    compile_unsupported = (
        "its training step calls the encoder's forward_local/forward_context, which torch.compile of the "
        "encoder does not cover"
    )

    def __init__(self, encoder: Encoder, params: CPCParams):
        if not getattr(encoder, "is_sequence", False):
            raise ConfigError("method", f"cpc needs a sequence encoder; {type(encoder).__name__} is not one")
        super().__init__(encoder, params)
        n_proj = params.steps_predicted if params.predict_all_offsets else 1
        self.projections = nn.ModuleList(
            nn.Linear(encoder.context_dim, encoder.local_dim, bias=False) for _ in range(n_proj)
        )

    @property
    def offsets(self) -> list[int]:
        k = self.params.steps_predicted
        return list(range(1, k + 1)) if self.params.predict_all_offsets else [k]

    def window_length(self, default: int) -> int:
        return self.params.input_length

    def training_step(self, batch: Batch, augment: Augment) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params
        x = augment(batch.x) if p.use_augment else batch.x
        z = self.encoder.forward_local(x)  # (B, T', local_dim)
        c = self.encoder.forward_context(z)  # (B, T', context_dim)
        losses, accuracies = [], []
        for projection, offset in zip(self.projections, self.offsets):
            neg_batch, neg_time = cpc_negative_indices(
                z.shape[0], z.shape[1], offset, p.n_negatives, p.negatives, device=z.device
            )
            loss, accuracy = cpc_infonce(projection(c), z, offset, neg_time, neg_batch)
            losses.append(loss)
            accuracies.append(accuracy)
        loss = torch.stack(losses).mean()
        return loss, {"loss": loss.detach(), "cpc_accuracy": torch.stack(accuracies).mean()}
