"""BYOL (Grill et al. 2020) as in the paper's reference code (paper notes §4.2), with a complete EMA."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.swa_utils import get_ema_multi_avg_fn

from ecg_tune.errors import ConfigError
from ecg_tune.ssl.encoders.base import Encoder
from ecg_tune.ssl.global_batchnorm import encode_views
from ecg_tune.ssl.heads import BYOLHead
from ecg_tune.ssl.losses import byol_loss
from ecg_tune.ssl.methods.base import Augment, Batch, Method


@dataclass
class BYOLParams:
    proj_hidden: int = 512  # projector Linear(d, 512, no bias) -> BN -> ReLU -> Linear(512, proj_dim)
    proj_dim: int = 16  # reference out_dim
    pred_hidden: int = 512  # predictor, same form: proj_dim -> pred_hidden -> proj_dim
    tau0: float = 0.996  # base EMA momentum; rises to 1 along a cosine over training

    def __post_init__(self) -> None:
        if not 0.0 <= self.tau0 <= 1.0:
            raise ConfigError("method.tau0", f"must be in [0, 1], got {self.tau0}")
        for key in ("proj_hidden", "proj_dim", "pred_hidden"):
            if getattr(self, key) < 1:
                raise ConfigError(f"method.{key}", f"must be >= 1, got {getattr(self, key)}")


def ema_tau(tau0: float, step: int, total_steps: int) -> float:
    """BYOL's cosine schedule: tau0 at step 0, 1 at the last step."""
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return 1.0 - (1.0 - tau0) * (math.cos(math.pi * progress) + 1.0) / 2.0


class BYOL(Method):
    """Online encoder -> projector -> predictor; target (encoder + projector) is an EMA of the online one.

    The target is a submodule (`target.encoder`, `target.projector`), so `state_dict()` holds it and a
    resumed run continues exactly. Its parameters never require gradients. Its BatchNorm layers use
    batch statistics in the forward pass (train mode, as in BYOL) but momentum 0 keeps that forward
    from touching their running statistics: those buffers are owned by the EMA, which (unlike the
    reference, paper notes 8.4) averages every parameter, biases included, and every float buffer.
    """

    shuffles_views = True  # its views go through encode_views one by one
    Params = BYOLParams
    params: BYOLParams

    def __init__(self, encoder: Encoder, params: BYOLParams):
        super().__init__(encoder, params)
        self.projector = BYOLHead(encoder.feature_dim, params.proj_hidden, params.proj_dim)
        self.predictor = BYOLHead(params.proj_dim, params.pred_hidden, params.proj_dim)
        self.target = nn.ModuleDict(
            {"encoder": copy.deepcopy(encoder), "projector": copy.deepcopy(self.projector)}
        )
        for p in self.target.parameters():
            p.requires_grad_(False)
        for m in self.target.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d):
                m.momentum = 0.0
        self.last_tau = params.tau0

    def _pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """(target float tensors, online float tensors, target int buffers, online int buffers), aligned."""
        t_float, o_float, t_int, o_int = [], [], [], []
        for name in ("encoder", "projector"):
            online: nn.Module = getattr(self, name)
            target = self.target[name]
            o_state = dict(online.named_parameters()) | dict(online.named_buffers())
            t_state = dict(target.named_parameters()) | dict(target.named_buffers())
            if o_state.keys() != t_state.keys():
                raise RuntimeError(f"BYOL target {name} no longer mirrors the online {name}")
            for key, o in o_state.items():
                t = t_state[key]
                if t.is_floating_point():
                    t_float.append(t)
                    o_float.append(o)
                else:
                    t_int.append(t)
                    o_int.append(o)
        return t_float, o_float, t_int, o_int

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """target <- tau * target + (1 - tau) * online, for all parameters and float buffers;
        integer buffers (BatchNorm's num_batches_tracked) are copied."""
        t_float, o_float, t_int, o_int = self._pairs()
        if t_float:  # torch's public multi-tensor EMA: one fused lerp over all tensors
            get_ema_multi_avg_fn(tau)(t_float, [o.detach() for o in o_float], None)
        for t, o in zip(t_int, o_int):
            t.copy_(o)

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.last_tau = ema_tau(self.params.tau0, step, total_steps)
        self.update_target(self.last_tau)

    def _target_projection(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.target["projector"](self.target["encoder"](x))

    def training_step(self, batch: Batch, augment: Augment) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        v1, v2 = augment(batch.x), augment(batch.x)
        # One pass per view, or one for both under global BatchNorm (per-view statistics either way).
        p1, p2 = encode_views(lambda v: self.predictor(self.projector(self.encoder(v))), [v1, v2], self)
        z1, z2 = encode_views(self._target_projection, [v1, v2], self)
        # Symmetric: each view's prediction regresses the target projection of the other view.
        loss = byol_loss(p1, z2) + byol_loss(p2, z1)
        return loss, {"loss": loss.detach(), "tau": torch.tensor(self.last_tau)}
