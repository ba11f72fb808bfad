"""JEPA for ECG as ECG-JEPA (Weimann & Conrad 2024, arXiv 2410.13867), on a patch-token encoder (vit1d).

A context encoder sees the tokens of the context positions only; an EMA copy of it (the target encoder)
sees the whole window; a narrow predictor gets the context tokens plus a mask token at every target
position (with its time position and lead) and regresses the target encoder's layer-normalised tokens
there. Masks are ECG-JEPA's blocks along time, all leads of a position together (`masking.jepa_block_masks`):
`n_targets` blocks of `target_scale` of the positions (at least `min_block` patches), and a context that
keeps a random `context_keep` share of the positions outside every block, so it never holds a target
patch. All target blocks are predicted in one predictor pass (I-JEPA runs one pass per block).

The target encoder follows the context encoder by EMA after every optimiser step, with the momentum
rising linearly from `ema_start` (0.998) to `ema_end` (0.9995) over training (ECG-JEPA). It is a submodule
(so a checkpoint resumes it) and never gets gradients. Not here: ECG-JEPA's weight-decay schedule
0.01 -> 0.1 (the trainer's optimiser has one constant weight decay).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import get_ema_multi_avg_fn

from ecg_tune.errors import ConfigError
from ecg_tune.ssl.encoders.base import Encoder
from ecg_tune.ssl.encoders.vit1d import Block, init_transformer_weights, sincos_positions
from ecg_tune.ssl.methods.base import Augment, Batch, Method
from ecg_tune.ssl.methods.mae import require_patch_tokens
from ecg_tune.ssl.methods.masking import gather_positions, jepa_block_masks

LOSSES = ("smooth_l1", "l1", "mse")


@dataclass
class JEPAParams:
    n_targets: int = 4  # target blocks per sample (ECG-JEPA)
    target_scale_min: float = 0.15  # block length as a share of the positions (ECG-JEPA 0.15-0.20)
    target_scale_max: float = 0.20
    min_block: int = 3  # patches; ECG-JEPA's 10 is at 200 positions (10 s, 500 Hz, 25-sample patches)
    context_keep_min: float = 0.85  # share of the non-target positions the context keeps
    context_keep_max: float = 1.0
    predictor_dim: int = 0  # 0 = half the encoder's width (narrow predictor)
    predictor_depth: int = 4
    predictor_heads: int = 4
    ema_start: float = 0.998
    ema_end: float = 0.9995
    loss: str = "smooth_l1"  # smooth_l1 (I-JEPA) | l1 | mse
    input_length: int = 0  # training crop in samples; 0 = data.window
    use_augment: bool = False

    def __post_init__(self) -> None:
        for key in ("n_targets", "min_block", "predictor_depth", "predictor_heads"):
            if getattr(self, key) < 1:
                raise ConfigError(f"method.{key}", f"must be >= 1, got {getattr(self, key)}")
        if not 0.0 < self.target_scale_min <= self.target_scale_max < 1.0:
            raise ConfigError("method.target_scale_min", "need 0 < target_scale_min <= target_scale_max < 1")
        if not 0.0 < self.context_keep_min <= self.context_keep_max <= 1.0:
            raise ConfigError("method.context_keep_min", "need 0 < context_keep_min <= context_keep_max <= 1")
        if not 0.0 <= self.ema_start <= self.ema_end <= 1.0:
            raise ConfigError("method.ema_start", "need 0 <= ema_start <= ema_end <= 1")
        if self.loss not in LOSSES:
            raise ConfigError("method.loss", f"must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        for key in ("predictor_dim", "input_length"):
            if getattr(self, key) < 0:
                raise ConfigError(f"method.{key}", f"must be >= 0, got {getattr(self, key)}")


def ema_momentum(start: float, end: float, step: int, total_steps: int) -> float:
    """Linear from `start` at step 0 to `end` at the last step (ECG-JEPA / I-JEPA schedule)."""
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return start + (end - start) * progress


def regression_loss(prediction: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    prediction, target = prediction.float(), target.float()
    if kind == "l1":
        return F.l1_loss(prediction, target)
    if kind == "mse":
        return F.mse_loss(prediction, target)
    return F.smooth_l1_loss(prediction, target)


class Predictor(nn.Module):
    """Narrow transformer: context tokens + mask tokens at the target positions -> target-space tokens."""

    positions: torch.Tensor

    def __init__(self, dim: int, width: int, depth: int, heads: int, n_leads: int, n_positions: int):
        super().__init__()
        if width % heads:
            raise ConfigError("method.predictor_heads", f"{heads} heads do not divide predictor width {width}")
        self.width = width
        self.embed = nn.Linear(dim, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, width))
        self.lead_embed = nn.Parameter(torch.zeros(1, n_leads, 1, width))
        self.register_buffer("positions", sincos_positions(n_positions, width), persistent=False)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.head = nn.Linear(width, dim)
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.lead_embed, std=0.02)
        init_transformer_weights(self)

    def no_weight_decay(self) -> set[str]:
        return {"mask_token", "lead_embed"}

    def forward(self, context: torch.Tensor, context_pos: torch.Tensor, target_pos: torch.Tensor) -> torch.Tensor:
        """context (B, leads * Kc, dim) at positions (B, Kc); target positions (B, Kt) -> (B, leads, Kt, dim)."""
        b, kc = context_pos.shape
        kt = target_pos.shape[1]
        leads = self.lead_embed.shape[1]
        ctx = self.embed(context).view(b, leads, kc, self.width)
        ctx = ctx + self.positions[context_pos][:, None] + self.lead_embed
        tgt = self.mask_token + self.positions[target_pos][:, None] + self.lead_embed  # (B, leads, Kt, width)
        tokens = torch.cat([ctx.flatten(1, 2), tgt.expand(b, leads, kt, self.width).flatten(1, 2)], dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        out = self.head(self.norm(tokens[:, leads * kc :]))
        return out.view(b, leads, kt, -1)


class JEPA(Method):
    Params = JEPAParams
    params: JEPAParams
    default_encoder = "vit1d"

    def __init__(self, encoder: Encoder, params: JEPAParams):
        require_patch_tokens(encoder, "jepa")
        super().__init__(encoder, params)
        dim = int(encoder.feature_dim)
        self.predictor = Predictor(
            dim, params.predictor_dim or max(dim // 2, params.predictor_heads), params.predictor_depth,
            params.predictor_heads, encoder.n_leads, int(cast(Any, encoder).max_positions),
        )
        self.target_encoder = copy.deepcopy(encoder)
        for p in self.target_encoder.parameters():
            p.requires_grad_(False)
        self.last_momentum = params.ema_start

    def window_length(self, default: int) -> int:
        return self.params.input_length or default

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """target <- momentum * target + (1 - momentum) * online, for every parameter and float buffer."""
        online = dict(self.encoder.named_parameters()) | dict(self.encoder.named_buffers())
        target = dict(self.target_encoder.named_parameters()) | dict(self.target_encoder.named_buffers())
        pairs = [(target[k], v) for k, v in online.items() if v.is_floating_point()]
        if pairs:  # torch's public multi-tensor EMA: one fused lerp over all tensors
            get_ema_multi_avg_fn(momentum)([t for t, _ in pairs], [o.detach() for _, o in pairs], None)

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.last_momentum = ema_momentum(self.params.ema_start, self.params.ema_end, step, total_steps)
        self.update_target(self.last_momentum)

    def training_step(self, batch: Batch, augment: Augment) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params
        x = augment(batch.x) if p.use_augment else batch.x
        enc: Any = self.encoder
        tokens = enc.embed(x)  # (B, leads, P, D)
        b, leads, n_positions, dim = tokens.shape
        masks = jepa_block_masks(
            b, n_positions, n_targets=p.n_targets, scale=(p.target_scale_min, p.target_scale_max),
            min_block=p.min_block, context_keep=(p.context_keep_min, p.context_keep_max), device=x.device,
        )
        with torch.no_grad():
            target: Any = self.target_encoder
            h = target.forward_tokens(x).view(b, leads, n_positions, dim)
            h = gather_positions(F.layer_norm(h.float(), (dim,)), masks.targets)
        context = enc.encode(gather_positions(tokens, masks.context).flatten(1, 2))
        prediction = self.predictor(context, masks.context, masks.targets)
        loss = regression_loss(prediction, h, p.loss)
        metrics = {"loss": loss.detach(), "ema_momentum": torch.tensor(self.last_momentum)}
        return loss, metrics
