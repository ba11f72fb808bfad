"""SwAV (Caron et al. 2020) as in the paper's reference code (paper notes §4.3)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ecg_tune.errors import ConfigError
from ecg_tune.ssl.encoders.base import Encoder
from ecg_tune.ssl.heads import SwAVProjectionHead, SwAVPrototypes
from ecg_tune.ssl.losses import sinkhorn, swav_loss
from ecg_tune.ssl.methods.base import Augment, Batch, Method


@dataclass
class SwAVParams:
    proj_hidden: int = 2048  # head Linear(d, 2048) -> BN -> ReLU -> Linear(2048, proj_dim) -> L2-normalise
    proj_dim: int = 128
    n_prototypes: int = 3000
    temperature: float = 0.1  # softmax temperature of the swapped predictions
    epsilon: float = 0.05  # Sinkhorn entropic regularisation
    sinkhorn_iterations: int = 3
    # The reference generates 7 full-length views of the same augmentation chain and drops the last
    # (its "online evaluation" slot), so 6 take part in the loss.
    n_views: int = 6
    assign_views: list[int] = field(default_factory=lambda: [0, 1])  # views whose codes are predicted
    freeze_prototypes_epochs: int = 1  # prototypes get no gradient during the first epoch(s)
    # Per-process queue of past embeddings per assigned view, used in Sinkhorn only (0 = off). The
    # reference uses 8 x batch size (32768 at batch 4096), enabled from epoch 15.
    queue_length: int = 0
    queue_start_epoch: int = 15
    gather_distributed: bool = True  # Sinkhorn normalises over the global batch under DDP

    def __post_init__(self) -> None:
        positive = ("proj_hidden", "proj_dim", "n_prototypes", "sinkhorn_iterations")
        for key in positive:
            if getattr(self, key) < 1:
                raise ConfigError(f"method.{key}", f"must be >= 1, got {getattr(self, key)}")
        for key in ("temperature", "epsilon"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"method.{key}", f"must be > 0, got {getattr(self, key)}")
        if self.n_views < 2:
            raise ConfigError("method.n_views", f"must be >= 2, got {self.n_views}")
        if not self.assign_views or len(set(self.assign_views)) != len(self.assign_views):
            raise ConfigError(
                "method.assign_views", f"must be distinct view indices, got {self.assign_views}"
            )
        if any(not 0 <= v < self.n_views for v in self.assign_views):
            raise ConfigError(
                "method.assign_views", f"indices must be in [0, {self.n_views}), got {self.assign_views}"
            )
        for key in ("queue_length", "queue_start_epoch", "freeze_prototypes_epochs"):
            if getattr(self, key) < 0:
                raise ConfigError(f"method.{key}", f"must be >= 0, got {getattr(self, key)}")


class SwAV(Method):
    """Swapped prediction of Sinkhorn codes between views.

    All views have the same length, so they go through the encoder and head in one concatenated forward
    pass (BatchNorm statistics over all views, as in SwAV's multi-crop forward). Prototypes are
    re-normalised at the start of every step. The queue and its fill count are buffers, so a checkpoint
    resumes them (under DDP the trainer must not broadcast buffers: each process has its own queue).
    """

    Params = SwAVParams
    params: SwAVParams
    queue: torch.Tensor  # (len(assign_views), queue_length, proj_dim), newest first
    queue_filled: torch.Tensor  # how many queue rows hold embeddings (long scalar)

    def __init__(self, encoder: Encoder, params: SwAVParams):
        super().__init__(encoder, params)
        self.projector = SwAVProjectionHead(encoder.feature_dim, params.proj_hidden, params.proj_dim)
        self.prototypes = SwAVPrototypes(params.proj_dim, params.n_prototypes)
        n_assign = len(params.assign_views)
        self.register_buffer("queue", torch.zeros(n_assign, params.queue_length, params.proj_dim))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))
        self.epoch = 0

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch

    def _queue_active(self) -> bool:
        return self.params.queue_length > 0 and self.epoch >= self.params.queue_start_epoch

    @torch.no_grad()
    def _push(self, embeddings: list[torch.Tensor]) -> None:
        """Newest first; the oldest entries fall off the end."""
        length = self.params.queue_length
        for i, z in enumerate(embeddings):
            self.queue[i] = torch.cat([z.detach().to(self.queue.dtype), self.queue[i]])[:length]
        self.queue_filled.copy_((self.queue_filled + embeddings[0].shape[0]).clamp(max=length))

    def training_step(self, batch: Batch, augment: Augment) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params
        self.prototypes.normalize()
        views = [augment(batch.x) for _ in range(p.n_views)]
        b = batch.x.shape[0]
        z = F.normalize(self.projector(self.encoder(torch.cat(views))), dim=1)
        frozen = self.epoch < p.freeze_prototypes_epochs
        scores = self.prototypes(z, frozen=frozen).split(b)
        z_views = z.split(b)

        # SwAV only uses the queue once it is full (before that it would mostly hold zeros).
        use_queue = self._queue_active() and int(self.queue_filled) >= p.queue_length
        codes: dict[int, torch.Tensor] = {}
        with torch.no_grad():
            for i, view in enumerate(p.assign_views):
                s = scores[view].detach()
                if use_queue:
                    s = torch.cat([self.prototypes(self.queue[i]), s])
                codes[view] = sinkhorn(s, p.epsilon, p.sinkhorn_iterations, p.gather_distributed)[-b:]
        if self._queue_active():
            self._push([z_views[view] for view in p.assign_views])

        loss = swav_loss(scores, codes, p.temperature)
        return loss, {"loss": loss.detach()}
