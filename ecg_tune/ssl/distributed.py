"""Small torch.distributed helpers for losses that need the global batch (NT-Xent, SwAV's Sinkhorn).

Every helper is the identity when torch.distributed is not initialised, so single-process training and
the tests need no process group. All ranks must call the collective helpers in the same order with
tensors of the same shape (in particular the same per-rank batch size).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward returns this rank's slice of the summed gradients.

    Every rank computes its loss on the gathered tensor, so the local slice influences the losses of
    all ranks; summing the incoming gradients over ranks (all_reduce) before slicing gives each rank
    d(sum of rank losses)/d(local slice). DDP then averages parameter gradients over ranks, so the update
    equals the single-process update on the global batch when each rank's loss is a mean over its local
    anchors. (A gather that only lets the local slice carry the local loss's gradient would drop the
    terms where this rank's samples act as negatives for other ranks.)
    """

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        t = t.contiguous()
        parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, t)
        ctx.local_size = t.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.local_size
        return grad[start : start + ctx.local_size]


def gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """Concatenate `t` (same shape on every rank) from all ranks along dim 0, rank order.

    Differentiable: the gradient reaching this rank's slice is summed over all ranks' losses (see
    `_GatherWithGrad`). Identity when torch.distributed is not initialised.
    """
    if not is_distributed() or dist.get_world_size() == 1:
        return t
    return _GatherWithGrad.apply(t)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of `t` over ranks, as a new tensor (not differentiable; used under no_grad)."""
    if not is_distributed():
        return t
    out = t.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum of `t` over ranks, as a new tensor (not differentiable)."""
    if not is_distributed():
        return t
    out = t.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return out
