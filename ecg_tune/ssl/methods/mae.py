"""Masked signal modelling as ST-MEM (Na et al. ICLR 2024): a masked autoencoder on lead x time patches.

Each lead hides a random `mask_ratio` of its patches (the same count per lead). The encoder (a patch-token
encoder, `vit1d`) runs on the visible tokens only; a narrow decoder gets them back in place, a learned
mask token at every hidden position, its own sine-cosine positions and lead embeddings, and predicts
the raw samples of each hidden patch. The loss is the mean squared error over hidden patches only; with
`norm_patch_loss` each target patch is first normalised by its own mean and variance (MAE's
norm_pix_loss: unbiased variance, eps 1e-6), so the loss weighs the shape of a patch, not its offset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ecg_tune.errors import ConfigError
from ecg_tune.ssl.encoders.base import Encoder
from ecg_tune.ssl.encoders.vit1d import Block, init_transformer_weights, sincos_positions
from ecg_tune.ssl.methods.base import Augment, Batch, Method
from ecg_tune.ssl.methods.masking import gather_positions, random_lead_masks


@dataclass
class MAEParams:
    mask_ratio: float = 0.75  # ST-MEM
    norm_patch_loss: bool = True  # MAE's best setting; ST-MEM's norm_pix_loss flag
    decoder_dim: int = 256  # ST-MEM: 256 wide x 4 blocks
    decoder_depth: int = 4
    decoder_heads: int = 4
    input_length: int = 0  # training crop in samples; 0 = data.window
    use_augment: bool = False  # masking is the corruption; the trainer's augmentations are optional

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_ratio < 1.0:
            raise ConfigError("method.mask_ratio", f"must be in (0, 1), got {self.mask_ratio}")
        for key in ("decoder_dim", "decoder_depth", "decoder_heads"):
            if getattr(self, key) < 1:
                raise ConfigError(f"method.{key}", f"must be >= 1, got {getattr(self, key)}")
        if self.decoder_dim % self.decoder_heads:
            raise ConfigError("method.decoder_heads", f"{self.decoder_heads} heads do not divide {self.decoder_dim}")
        if self.input_length < 0:
            raise ConfigError("method.input_length", f"must be >= 0 (0 = data.window), got {self.input_length}")


def require_patch_tokens(encoder: Encoder, method: str) -> None:
    """Masked methods need an encoder that exposes its token grid (embed/encode/patchify), e.g. vit1d."""
    if not all(hasattr(encoder, name) for name in ("embed", "encode", "patchify", "n_patches")):
        raise ConfigError(
            "encoder.name", f"{method} needs a patch-token encoder (vit1d); {type(encoder).__name__} has no tokens"
        )


def masked_patch_loss(prediction: torch.Tensor, target: torch.Tensor, normalize: bool) -> torch.Tensor:
    """Mean over patches of the per-patch mean squared error; both (..., patch_size)."""
    target = target.float()
    if normalize:
        target = (target - target.mean(dim=-1, keepdim=True)) / (target.var(dim=-1, keepdim=True) + 1e-6).sqrt()
    return (prediction.float() - target).square().mean()


class MAE(Method):
    Params = MAEParams
    params: MAEParams
    default_encoder = "vit1d"
    decoder_positions: torch.Tensor

    def __init__(self, encoder: Encoder, params: MAEParams):
        require_patch_tokens(encoder, "mae")
        super().__init__(encoder, params)
        vit: Any = encoder  # a patch-token encoder (checked above): max_positions, patch_size
        dim, width = int(encoder.feature_dim), params.decoder_dim
        self.decoder_embed = nn.Linear(dim, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, width))
        self.decoder_lead_embed = nn.Parameter(torch.zeros(1, encoder.n_leads, 1, width))
        n_positions = int(vit.max_positions)
        self.register_buffer("decoder_positions", sincos_positions(n_positions, width), persistent=False)
        self.decoder_blocks = nn.ModuleList(Block(width, params.decoder_heads) for _ in range(params.decoder_depth))
        self.decoder_norm = nn.LayerNorm(width, eps=1e-6)
        self.decoder_head = nn.Linear(width, int(vit.patch_size))
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.decoder_lead_embed, std=0.02)
        init_transformer_weights(self.decoder_embed)
        init_transformer_weights(self.decoder_blocks)
        init_transformer_weights(self.decoder_head)

    def no_weight_decay(self) -> set[str]:
        return {"mask_token", "decoder_lead_embed"}

    @classmethod
    def encoder_defaults(cls, window: int) -> dict[str, Any]:
        # ST-MEM's patches last 0.3 s (75 samples at 250 Hz). At vit1d's own 0.1 s patches the normalised
        # target of most patches is baseline noise and the loss stalls near 0.885 (docs/benchmarks.md
        # §10); ten patches per window is 0.25 s for the PTB-XL protocol's 2.5 s windows at any rate.
        return {"patch_size": max(1, window // 10)}

    def window_length(self, default: int) -> int:
        return self.params.input_length or default

    def decode(self, latent: torch.Tensor, visible: torch.Tensor, n_positions: int) -> torch.Tensor:
        """latent (B, leads * K, D) of the visible positions (B, leads, K) -> (B, leads, P, patch_size)."""
        b, leads, k = visible.shape
        width = self.params.decoder_dim
        h = self.decoder_embed(latent).view(b, leads, k, width)
        grid = self.mask_token.expand(b, leads, n_positions, width).to(h.dtype)
        grid = grid.scatter(2, visible[..., None].expand(b, leads, k, width), h)
        grid = grid + self.decoder_positions[:n_positions] + self.decoder_lead_embed
        tokens = grid.flatten(1, 2)
        for block in self.decoder_blocks:
            tokens = block(tokens)
        return self.decoder_head(self.decoder_norm(tokens)).view(b, leads, n_positions, -1)

    def training_step(self, batch: Batch, augment: Augment) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = augment(batch.x) if self.params.use_augment else batch.x
        enc: Any = self.encoder  # a patch-token encoder (checked in __init__)
        tokens = enc.embed(x)  # (B, leads, P, D)
        b, leads, n_positions, _ = tokens.shape
        visible, masked = random_lead_masks(b, leads, n_positions, self.params.mask_ratio, device=x.device)
        latent = enc.encode(gather_positions(tokens, visible).flatten(1, 2))
        prediction = self.decode(latent, visible, n_positions)
        patches = enc.patchify(x)  # (B, leads, P, patch_size)
        loss = masked_patch_loss(
            gather_positions(prediction, masked), gather_positions(patches, masked), self.params.norm_patch_loss
        )
        return loss, {"loss": loss.detach()}
