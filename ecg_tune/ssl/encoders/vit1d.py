"""1-D patch transformer (ViT) over 12-lead ECGs with ST-MEM's spatio-temporal tokens.

Each lead is cut into non-overlapping patches of `patch_size` samples and every patch becomes one
token: a Linear embedding of the patch (shared by all leads) + the embedding of its time position +
the embedding of its lead (ST-MEM, Na et al. ICLR 2024). The tokens of all leads form one sequence of
`leads x patches` tokens (lead-major), so attention mixes time and leads. Pre-norm transformer blocks and
a final LayerNorm; `forward` pools the tokens by their mean (feature_dim = dim). ST-MEM's per-lead SEP
tokens are left out: the lead embeddings already tell the leads apart.

Patch size is in samples. The default 10 is 100 ms at 100 Hz (ST-MEM: 75 samples = 300 ms at 250 Hz;
ECG-JEPA: 25 samples = 50 ms at 500 Hz); at 500 Hz use 50 for the same 100 ms. Samples after the last
whole patch are dropped (fewer than `patch_size`).

Sizes (dim / depth / heads): `xs` 192/8/6 (3.6 M), `s` 384/8/6 (14.2 M, ECG-JEPA's ViT-S), `b` 768/12/12;
`dim`, `depth`, `heads` > 0 override the size's value.

Masked methods use the pieces instead of `forward`: `embed(x) -> (B, leads, patches, dim)` (positions and
leads already added, so any subset of tokens keeps them), `encode(tokens (B, M, dim)) -> (B, M, dim)` runs
the blocks on any subset, `forward_tokens(x) -> (B, leads * patches, dim)` on all tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ecg_tune.errors import ConfigError
from ecg_tune.ssl.encoders.base import Encoder

SIZES = {"xs": (192, 8, 6), "s": (384, 8, 6), "b": (768, 12, 12)}
POSITIONS = ("sincos", "learned")


@dataclass
class ViT1dParams:
    size: str = "xs"  # xs | s | b
    dim: int = 0  # 0 = the size's width
    depth: int = 0  # 0 = the size's number of blocks
    heads: int = 0  # 0 = the size's number of attention heads
    mlp_ratio: float = 4.0
    patch_size: int = 10  # samples per patch: 100 ms at 100 Hz (use 50 at 500 Hz)
    positions: str = "sincos"  # sincos (fixed, as ST-MEM and ECG-JEPA) | learned

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ConfigError("encoder.size", f"must be one of {', '.join(SIZES)}, got {self.size!r}")
        if self.positions not in POSITIONS:
            raise ConfigError("encoder.positions", f"must be one of {', '.join(POSITIONS)}, got {self.positions!r}")
        for key in ("dim", "depth", "heads"):
            if getattr(self, key) < 0:
                raise ConfigError(f"encoder.{key}", f"must be >= 0 (0 = the size's value), got {getattr(self, key)}")
        if self.patch_size < 1:
            raise ConfigError("encoder.patch_size", f"must be >= 1, got {self.patch_size}")
        if self.mlp_ratio <= 0:
            raise ConfigError("encoder.mlp_ratio", f"must be > 0, got {self.mlp_ratio}")

    def resolved(self) -> tuple[int, int, int]:
        dim, depth, heads = SIZES[self.size]
        dim, depth, heads = self.dim or dim, self.depth or depth, self.heads or heads
        if dim % heads:
            raise ConfigError("encoder.heads", f"{heads} heads do not divide width {dim}")
        return dim, depth, heads


def sincos_positions(n: int, dim: int) -> torch.Tensor:
    """(n, dim) fixed 1-D sine-cosine embeddings (MAE's get_1d_sincos_pos_embed); dim may be odd."""
    half = (dim + 1) // 2
    omega = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float64) / half)
    angles = torch.arange(n, dtype=torch.float64)[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)[:, :dim].float()


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = max(1, int(dim * mlp_ratio))
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + self.proj(attended)
        return x + self.mlp(self.norm2(x))


def init_transformer_weights(module: nn.Module) -> None:
    """ViT/MAE initialisation: truncated normal (std 0.02) Linear weights, zero biases, unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ViT1d(Encoder):
    Params = ViT1dParams
    params: ViT1dParams
    positions: torch.Tensor  # (max_positions, dim) sincos buffer, or the learned parameter

    @classmethod
    def min_length(cls, params: ViT1dParams) -> int:
        return params.patch_size

    def __init__(self, params: ViT1dParams, n_leads: int, input_length: int):
        super().__init__(params, n_leads, input_length)
        dim, depth, heads = params.resolved()
        self.dim, self.patch_size = dim, params.patch_size
        self.feature_dim = dim
        # Positions for the longest window this encoder is built for; shorter windows use the first ones.
        self.max_positions = max(1, input_length // params.patch_size)
        self.patch_embed = nn.Linear(params.patch_size, dim)
        self.lead_embed = nn.Parameter(torch.zeros(1, n_leads, 1, dim))
        if params.positions == "learned":
            self.positions = nn.Parameter(torch.zeros(self.max_positions, dim))
            nn.init.trunc_normal_(self.positions, std=0.02)
        else:
            # Not persistent: recomputed from the header's geometry, so checkpoints stay small.
            self.register_buffer("positions", sincos_positions(self.max_positions, dim), persistent=False)
        nn.init.trunc_normal_(self.lead_embed, std=0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, params.mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        init_transformer_weights(self.patch_embed)
        init_transformer_weights(self.blocks)

    def no_weight_decay(self) -> set[str]:
        """Parameter names (relative to this module) that the optimiser must not decay (ecg_tune.ssl.optim)."""
        return {"lead_embed", "positions"}

    def n_patches(self, length: int) -> int:
        return length // self.patch_size

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, leads, T) -> (B, leads, patches, patch_size), dropping the samples after the last patch."""
        n = self.n_patches(x.shape[-1])
        if n > self.max_positions:
            raise ValueError(
                f"window of {x.shape[-1]} samples has {n} patches; this encoder was built for at most "
                f"{self.max_positions} ({self.input_length} samples)"
            )
        return x[..., : n * self.patch_size].unflatten(-1, (n, self.patch_size))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, leads, T) -> tokens (B, leads, patches, dim) with position and lead embeddings added."""
        patches = self.patchify(x)
        return self.patch_embed(patches) + self.positions[: patches.shape[2]] + self.lead_embed

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Run the blocks and the final norm on any set of embedded tokens (B, M, dim)."""
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, leads, T) -> (B, leads * patches, dim), lead-major."""
        return self.encode(self.embed(x).flatten(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_tokens(x).mean(dim=1)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Embeddings, then the blocks in (up to) three chunks, the final norm with the last chunk: few
        enough groups that discriminative learning rates (divided per group) do not vanish at the input."""
        embedding: list[nn.Parameter] = [*self.patch_embed.parameters(), self.lead_embed]
        if isinstance(self.positions, nn.Parameter):
            embedding.append(self.positions)
        blocks = list(self.blocks)
        size = max(1, math.ceil(len(blocks) / 3))
        chunks = [blocks[i : i + size] for i in range(0, len(blocks), size)]
        groups: list[list[nn.Parameter]] = [embedding] + [[p for b in chunk for p in b.parameters()] for chunk in chunks]
        groups[-1] = groups[-1] + list(self.norm.parameters())
        return groups
