"""Patch masks of mae and jepa, property-tested: ratios, block sizes, no target patch in the context."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ecg_tune.ssl.methods.masking import (
    block_size,
    gather_positions,
    jepa_block_masks,
    n_visible,
    random_lead_masks,
)


@settings(max_examples=60, deadline=None)
@given(batch=st.integers(1, 4), leads=st.integers(1, 12), positions=st.integers(2, 60),
       ratio=st.floats(0.05, 0.95), seed=st.integers(0, 2**16))
def test_lead_masks_split_every_lead_at_the_ratio(batch: int, leads: int, positions: int, ratio: float,
                                                  seed: int) -> None:
    torch.manual_seed(seed)
    visible, masked = random_lead_masks(batch, leads, positions, ratio)
    k = min(max(int(positions * (1 - ratio)), 1), positions - 1)
    assert n_visible(positions, ratio) == k
    assert visible.shape == (batch, leads, k) and masked.shape == (batch, leads, positions - k)
    both = torch.cat([visible, masked], dim=-1).sort(dim=-1).values
    assert torch.equal(both, torch.arange(positions).expand(batch, leads, positions))  # a partition
    assert bool((visible.diff(dim=-1) > 0).all()) and bool((masked.diff(dim=-1) > 0).all())


def test_lead_masks_differ_between_leads_and_hide_three_quarters_by_default() -> None:
    torch.manual_seed(0)
    visible, masked = random_lead_masks(2, 12, 25, 0.75)
    assert visible.shape[-1] == 6 and masked.shape[-1] == 19
    assert len({tuple(v.tolist()) for v in visible.flatten(0, 1)}) > 1


def runs(row: torch.Tensor) -> list[int]:
    """Lengths of the runs of True in a 1-D bool tensor."""
    lengths, current = [], 0
    for value in row.tolist() + [False]:
        if value:
            current += 1
        elif current:
            lengths.append(current)
            current = 0
    return lengths


@settings(max_examples=80, deadline=None)
@given(batch=st.integers(1, 6), positions=st.integers(5, 80), n_targets=st.integers(1, 4),
       scale=st.tuples(st.floats(0.05, 0.4), st.floats(0.0, 0.2)), min_block=st.integers(1, 12),
       keep=st.tuples(st.floats(0.3, 1.0), st.floats(0.0, 0.5)), seed=st.integers(0, 2**16))
def test_block_masks_properties(batch: int, positions: int, n_targets: int, scale: tuple[float, float],
                                min_block: int, keep: tuple[float, float], seed: int) -> None:
    if positions < n_targets + 1:
        return
    scale_range = (scale[0], min(scale[0] + scale[1], 0.9))
    keep_range = (keep[0], min(keep[0] + keep[1], 1.0))
    torch.manual_seed(seed)
    m = jepa_block_masks(batch, positions, n_targets=n_targets, scale=scale_range, min_block=min_block,
                         context_keep=keep_range)
    cap = (positions - 1) // n_targets
    low = min(max(round(scale_range[0] * positions), min_block), cap)
    high = min(max(round(scale_range[1] * positions), min_block), cap)
    assert max(low, 1) <= m.block_size <= max(high, 1)
    assert block_size(positions, n_targets, scale_range[0], min_block) == max(low, 1)
    assert m.context.shape[0] == m.targets.shape[0] == batch
    assert m.context.shape[1] >= 1 and m.targets.shape[1] >= m.block_size
    for b in range(batch):
        covered = m.target_mask[b]
        # No leakage: the context holds no position of any target block.
        assert not bool(covered[m.context[b]].any())
        assert bool(covered[m.targets[b]].all())
        assert len(set(m.context[b].tolist())) == m.context.shape[1]
        assert len(set(m.targets[b].tolist())) == m.targets.shape[1]
        # The union of blocks: between 1 and n_targets runs, each at least one block long.
        lengths = runs(covered)
        assert 1 <= len(lengths) <= n_targets and min(lengths) >= m.block_size
        assert sum(lengths) <= n_targets * m.block_size
    # The context keeps its share of the free positions of the poorest row.
    free = int((~m.target_mask).sum(dim=1).min())
    assert max(1, int(keep_range[0] * free)) <= m.context.shape[1] <= free


def test_block_masks_defaults_at_25_positions() -> None:
    torch.manual_seed(0)
    m = jepa_block_masks(8, 25, n_targets=4, scale=(0.15, 0.2), min_block=3, context_keep=(0.85, 1.0))
    assert m.block_size in (4, 5)
    assert m.context.shape[1] >= 4


def test_gather_positions_shared_and_per_lead() -> None:
    grid = torch.arange(2 * 3 * 5, dtype=torch.float32).view(2, 3, 5, 1).expand(2, 3, 5, 2)
    shared = gather_positions(grid, torch.tensor([[0, 4], [1, 2]]))
    assert shared.shape == (2, 3, 2, 2)
    assert shared[1, 2, :, 0].tolist() == [grid[1, 2, 1, 0].item(), grid[1, 2, 2, 0].item()]
    per_lead = gather_positions(grid, torch.tensor([[[0], [1], [2]], [[3], [4], [0]]]))
    assert per_lead[1, :, 0, 0].tolist() == [grid[1, 0, 3, 0].item(), grid[1, 1, 4, 0].item(), grid[1, 2, 0, 0].item()]
