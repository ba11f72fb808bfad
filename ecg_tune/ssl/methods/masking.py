"""Patch masks for the masked methods (mae, jepa), as index tensors over patch positions.

Positions are time indices of a patch-token encoder's grid (B, leads, patches, dim). Every sample of a
batch keeps the same number of positions (tensors stay rectangular, one gather per batch), chosen at
random per sample. Randomness comes from torch's default generator of the device, which the trainer
seeds and checkpoints (as for CPC's negatives).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def gather_positions(grid: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """grid (B, leads, P, D); positions (B, K) shared by all leads or (B, leads, K) -> (B, leads, K, D)."""
    b, leads, _, d = grid.shape
    if positions.dim() == 2:
        positions = positions[:, None].expand(b, leads, positions.shape[1])
    return grid.gather(2, positions[..., None].expand(*positions.shape, d))


def _random_members(member: torch.Tensor, k: int) -> torch.Tensor:
    """k random True positions of each row of `member` (..., P), sorted; rows must hold at least k."""
    # Members score in [0, 1), non-members in [2, 3): the k smallest are random members.
    scores = torch.rand(member.shape, device=member.device) + 2.0 * (~member).float()
    return scores.argsort(dim=-1)[..., :k].sort(dim=-1).values


def n_visible(n_positions: int, mask_ratio: float) -> int:
    """Positions kept visible per lead: floor(P (1 - ratio)) as ST-MEM/MAE, at least 1 and at most P - 1."""
    return min(max(int(n_positions * (1.0 - mask_ratio)), 1), n_positions - 1)


def random_lead_masks(batch: int, leads: int, n_positions: int, mask_ratio: float,
                      device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """ST-MEM's masking: each lead of each sample hides its own random `mask_ratio` of the positions.

    Returns (visible, masked) sorted position indices, (B, leads, K) and (B, leads, P - K).
    """
    if n_positions < 2:
        raise ValueError(f"masking needs at least 2 patches per lead, got {n_positions}")
    k = n_visible(n_positions, mask_ratio)
    order = torch.rand(batch, leads, n_positions, device=device).argsort(dim=-1)
    return order[..., :k].sort(dim=-1).values, order[..., k:].sort(dim=-1).values


@dataclass
class BlockMasks:
    context: torch.Tensor  # (B, Kc) positions the context encoder sees
    targets: torch.Tensor  # (B, Kt) positions whose target-encoder tokens are predicted
    target_mask: torch.Tensor  # (B, P) bool: every position covered by a target block
    block_size: int  # patches per target block (the same for the whole batch)


def block_size(n_positions: int, n_targets: int, scale: float, min_block: int) -> int:
    """round(scale * P), at least `min_block`, capped so that `n_targets` blocks leave one position free."""
    size = max(round(scale * n_positions), min_block, 1)
    return max(1, min(size, (n_positions - 1) // n_targets))


def jepa_block_masks(batch: int, n_positions: int, *, n_targets: int, scale: tuple[float, float],
                     min_block: int, context_keep: tuple[float, float],
                     device: torch.device | str = "cpu") -> BlockMasks:
    """ECG-JEPA's block masking along time (all leads of a position together).

    Per batch one block size (`scale` of the positions, drawn uniformly, at least `min_block`) and one
    context keep ratio; per sample `n_targets` blocks at random starts (they may overlap). The context is
    a random `keep` share of the positions outside every target block, so it never contains a target
    position. Rows keep as many positions as the poorest row (context and targets): a row whose blocks
    overlap more has fewer target positions, and the others drop random ones of theirs.
    """
    if n_positions < n_targets + 1:
        raise ValueError(f"{n_targets} target blocks need at least {n_targets + 1} patches, got {n_positions}")
    draw = torch.rand(2).tolist()  # CPU draws for the batch-wide size and keep ratio
    size = block_size(n_positions, n_targets, scale[0] + draw[0] * (scale[1] - scale[0]), min_block)
    keep = context_keep[0] + draw[1] * (context_keep[1] - context_keep[0])
    starts = (torch.rand(batch, n_targets, device=device) * (n_positions - size + 1)).long()
    steps = torch.arange(n_positions, device=device)
    covered = (steps >= starts[..., None]) & (steps < starts[..., None] + size)  # (B, n_targets, P)
    target_mask = covered.any(dim=1)
    n_free = int((~target_mask).sum(dim=1).min())
    n_context = max(1, int(keep * n_free))
    n_target = int(target_mask.sum(dim=1).min())
    return BlockMasks(
        context=_random_members(~target_mask, n_context),
        targets=_random_members(target_mask, n_target),
        target_mask=target_mask,
        block_size=size,
    )
