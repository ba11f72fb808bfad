"""CMSC, contrastive multi-segment coding (CLOCS, Kiyasseh et al. ICML 2021).

The positives of a segment are other segments of the same record: the method asks the trainer for a
crop of two windows (`window_length` = 2 x data.window) and splits it into two adjacent, non-overlapping
segments. Both go through the encoder (one forward pass over the concatenation), a linear projection to
`proj_dim` and L2 normalisation; the loss is CLOCS' symmetric InfoNCE over the cross-segment cosine
similarities: for s = z1 z2^T / temperature, the mean of cross_entropy(s, i -> i) and of
cross_entropy(s^T, i -> i). Unlike NT-Xent, segments of the same side are not negatives of each other.

With `positives: patient` (CLOCS' patient-level CMSC), segments of the other records of the same
patient in the (global) batch are positives too: the loader then yields each window's patient id
(records without one are patients of their own), and each direction's loss is the mean over an
anchor's positives of -log softmax (the multi-positive InfoNCE; with one positive per anchor it is
the record-level loss above).

Not here: CLOCS' CMLC/CMSMLC lead-wise variants.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ecg_tune.errors import ConfigError
from ecg_tune.ssl.distributed import gather_with_grad, rank
from ecg_tune.ssl.encoders.base import Encoder
from ecg_tune.ssl.methods.base import Augment, Batch, Method


@dataclass
class CMSCParams:
    temperature: float = 0.1  # CLOCS
    proj_dim: int = 128  # CLOCS' embedding size
    use_augment: bool = False  # CLOCS contrasts raw segments; the trainer's augmentations are optional
    gather_distributed: bool = True  # data-parallel: the other segments of the global batch are negatives
    positives: str = "record"  # record | patient: other records of the same patient are positives too

    def __post_init__(self) -> None:
        if self.positives not in ("record", "patient"):
            raise ConfigError("method.positives", f"must be record or patient, got {self.positives!r}")
        if self.temperature <= 0:
            raise ConfigError("method.temperature", f"must be > 0, got {self.temperature}")
        if self.proj_dim < 1:
            raise ConfigError("method.proj_dim", f"must be >= 1, got {self.proj_dim}")


def cmsc_logits(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, B) cosine similarities of L2-normalised embeddings over the temperature: row i = segment 1 of i."""
    return F.normalize(z1.float(), dim=1) @ F.normalize(z2.float(), dim=1).T / temperature


def multi_positive_nce(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -(mean over the row's positives of log softmax(row)); `positive` (A, N) bool
    with at least one True per row. One positive per row: cross_entropy."""
    log_prob = logits.log_softmax(dim=1)
    return -(log_prob * positive).sum(dim=1).div(positive.sum(dim=1)).mean()


class CMSC(Method):
    Params = CMSCParams
    params: CMSCParams

    def __init__(self, encoder: Encoder, params: CMSCParams):
        super().__init__(encoder, params)
        self.projector = nn.Linear(encoder.feature_dim, params.proj_dim)

    @classmethod
    def needs_groups(cls, params: CMSCParams) -> bool:
        return params.positives == "patient"

    def window_length(self, default: int) -> int:
        return 2 * default

    def training_step(self, batch: Batch, augment: Augment) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = batch.x
        half = x.shape[-1] // 2
        b = x.shape[0]
        segments = [x[..., :half], x[..., half : 2 * half]]
        if self.params.use_augment:  # each segment on its own: a crop must not mix the two
            segments = [augment(s) for s in segments]
        z = self.projector(self.encoder(torch.cat(segments)))
        z1, z2 = z[:b], z[b:]
        if self.params.gather_distributed:  # identity in one process
            all1, all2, first = gather_with_grad(z1), gather_with_grad(z2), rank() * b
        else:
            all1, all2, first = z1, z2, 0
        # Rows of s and of s^T for this rank's anchors, against every segment of the (global) batch.
        logits = cmsc_logits(z1, all2, self.params.temperature)
        logits_t = cmsc_logits(z2, all1, self.params.temperature)
        targets = torch.arange(first, first + b, device=logits.device)
        if self.params.positives == "patient":
            if batch.groups is None:
                raise ConfigError("method.positives", "patient positives need the batches' patient ids; "
                                                      "this data source gives none (use data.mode=memory)")
            with torch.no_grad():
                groups = batch.groups.to(logits.device)
                every = gather_with_grad(groups) if self.params.gather_distributed else groups
                positive = groups.unsqueeze(1) == every.unsqueeze(0)  # own segment included
            loss = (multi_positive_nce(logits, positive) + multi_positive_nce(logits_t, positive)) / 2
            with torch.no_grad():
                accuracy = positive.gather(1, logits.argmax(dim=1, keepdim=True)).float().mean()
        else:
            loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits_t, targets)) / 2
            with torch.no_grad():
                accuracy = (logits.argmax(dim=1) == targets).float().mean()
        return loss, {"loss": loss.detach(), "contrastive_accuracy": accuracy}
