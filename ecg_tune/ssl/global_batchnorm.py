"""BatchNorm over the global batch of a data-parallel run, on any device (gloo on CPU included).

torch's `SyncBatchNorm` only runs on GPUs; this one works wherever torch.distributed does: per channel
the ranks' means and sums of squares are combined in one gather per layer in the forward pass and the
sums of dy and dy·(x − mean) in one per layer in the backward pass, so the forward and the gradients are
those of one BatchNorm over the concatenated batch of all ranks (up to float rounding: each rank's
two-pass mean and variance are combined in float64). The per-layer collectives are what global
BatchNorm costs, so `encode_views` runs a method's views through the encoder in one call whose layers
normalise each view by its own statistics: one collective per layer for all views, and the same
result as one call per view.

`convert_batchnorm(module)` swaps every BatchNorm layer for a `GlobalBatchNorm` that shares its
parameters and buffers (state_dict keys, optimiser entries and EMA pairs stay valid). A converted layer
synchronises only while `synchronise(module)` is active (the trainer's steps): outside it, e.g. in a
probe or a protocol that rank 0 runs alone, it is an ordinary BatchNorm and calls no collective.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ecg_tune.ssl.distributed import (
    all_reduce_sum,
    gather_stack,
    gather_with_grad,
    rank,
    shared_permutation,
    world_size,
)


def _global_stats(parts: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Per (view group, channel) mean and biased variance over all ranks' samples of each part, and the
    global count per (group, channel), in one collective. Each rank's exact two-pass statistics (torch's own
    BatchNorm kernel, four times faster on CPU than `var_mean` over the batch and time dims) are combined
    in float64 (Chan et al.): n·m and M2 + n·m² summed over ranks give the global mean and variance
    without E[x²] − E[x]² cancellation."""
    rows = []
    for part in parts:
        _, mean, invstd = torch.native_batch_norm(part, None, None, None, None, True, 0.0, 0.0)
        m = mean.double()
        rows.append(torch.cat([m, invstd.double().pow(-2) + m * m]))  # eps 0: invstd = var^-1/2
    n_local = parts[0].numel() // parts[0].shape[1]
    stats = gather_stack(torch.stack(rows) * n_local).sum(dim=0)
    n = float(n_local * world_size())
    c = parts[0].shape[1]
    mean64 = stats[:, :c] / n
    var = (stats[:, c:] / n - mean64 * mean64).clamp(min=0)
    return mean64.float(), var.float(), n


class _Normalise(torch.autograd.Function):
    """(x − mean) · invstd · w + b per view group, with `mean` and `var` (G, C) those of the global batch
    (`_global_stats`), and the exact gradient through them.

    Forward and backward run torch's BatchNorm kernels with the global statistics; the backward kernel
    takes its means of dy and dy·(x − mean) over this rank's samples, and one collective of their sums
    turns them into the global batch's means (SyncBatchNorm's backward), applied as one fused
    correction dx += a·x + b. dw and db stay this rank's own sums (the trainer averages parameter
    gradients over ranks)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
                var: torch.Tensor, n: float, eps: float) -> torch.Tensor:
        parts = x.chunk(mean.shape[0])
        out = [F.batch_norm(p, mean[g], var[g], weight, bias, False, 0.0, eps) for g, p in enumerate(parts)]
        ctx.save_for_backward(x, weight, mean, torch.rsqrt(var + eps))
        ctx.n, ctx.eps = n, eps
        return out[0] if len(out) == 1 else torch.cat(out)

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, mean, invstd = ctx.saved_tensors
        groups, c = mean.shape
        xs = x.chunk(groups)
        dxs, sums, dw, db = [], [], torch.zeros_like(weight), torch.zeros_like(weight)
        for g, (x_g, dy_g) in enumerate(zip(xs, dy.chunk(groups), strict=True)):
            dx_g, dw_g, db_g = torch.ops.aten.native_batch_norm_backward(
                dy_g.contiguous(), x_g, weight, None, None, mean[g], invstd[g], True, ctx.eps, [True, True, True])
            dxs.append(dx_g)
            sums.append(torch.cat([db_g, dw_g / invstd[g]]))  # Σ dy, Σ dy·(x − mean) on this rank
            dw += dw_g
            db += db_g
        local = torch.stack(sums)
        total = gather_stack(local).sum(dim=0)
        # Replace the kernel's local means by the global ones:
        # dx += k·(Δmean(dy) + (x − mean)·invstd²·Δmean(dy·(x − mean))), k = w·invstd.
        delta = local / (xs[0].numel() // c) - total / ctx.n
        k = weight * invstd
        alpha = k * invstd * invstd * delta[:, c:]
        beta = k * delta[:, :c] - mean * alpha
        shape = (1, c) + (1,) * (x.dim() - 2)
        for g, (dx_g, x_g) in enumerate(zip(dxs, xs, strict=True)):
            dx_g.addcmul_(x_g, alpha[g].view(shape)).add_(beta[g].view(shape))
        dx = dxs[0] if groups == 1 else torch.cat(dxs)
        return (dx, dw if ctx.needs_input_grad[1] else None, db if ctx.needs_input_grad[2] else None,
                None, None, None, None)


class GlobalBatchNorm(nn.BatchNorm1d):
    """A BatchNorm1d (the norm of every 1-D ECG encoder here) whose statistics, while `mode` is
    "global", are those of the global batch ("local" and "shuffle": this rank's slice, as BatchNorm1d).
    With `groups` = G the batch is G equal blocks (the views of `encode_views`), each normalised by its
    own statistics, as G separate calls would be."""

    mode: str = "local"
    groups: int = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        if not (self.mode == "global" and batch_stats and world_size() > 1):
            if self.groups > 1:
                return torch.cat([super(GlobalBatchNorm, self).forward(part) for part in x.chunk(self.groups)])
            return super().forward(x)
        if x.dim() not in (2, 3):
            raise ValueError(f"expected 2-D or 3-D input (batch, channels[, time]), got {x.dim()}-D")
        xf = x.float()
        with torch.no_grad():
            mean, var, n = _global_stats(xf.chunk(self.groups))
        if self.training and self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                assert self.num_batches_tracked is not None and self.running_var is not None
                for mean_g, var_g in zip(mean, var, strict=True):  # one update per view, in order
                    self.num_batches_tracked.add_(1)
                    factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                    self.running_mean.lerp_(mean_g.to(self.running_mean.dtype), factor)
                    self.running_var.lerp_((var_g * (n / max(n - 1, 1))).to(self.running_var.dtype), factor)
        c = x.shape[1]
        weight = self.weight.float() if self.affine else torch.ones(c, device=x.device)
        bias = self.bias.float() if self.affine else torch.zeros(c, device=x.device)
        return _Normalise.apply(xf, weight, bias, mean, var, n, self.eps).to(x.dtype)


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d below (and at) `module` by a `GlobalBatchNorm` with the same
    parameters and buffers (the same tensor objects); returns the module (the new one at the root).
    A 2-D or 3-D BatchNorm (no ECG encoder has one) is refused rather than left per rank unnoticed."""
    if isinstance(module, nn.BatchNorm2d | nn.BatchNorm3d):
        raise TypeError(f"{type(module).__name__}: global BatchNorm supports BatchNorm1d only")
    if isinstance(module, nn.BatchNorm1d) and not isinstance(module, GlobalBatchNorm):
        new = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        new.weight, new.bias = module.weight, module.bias
        new.running_mean, new.running_var = module.running_mean, module.running_var
        new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in list(module.named_children()):
        converted = convert_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


MODES = ("local", "global", "shuffle")


@contextlib.contextmanager
def synchronise(module: nn.Module, mode: str = "global") -> Iterator[None]:
    """While active, the `GlobalBatchNorm` layers of `module` are in `mode`: "global" (statistics of the
    global batch), "shuffle" (per rank, and `encode_views` normalises each sample's views on different
    ranks) or "local" (per rank: nothing changes)."""
    if mode not in MODES:
        raise ValueError(f"BatchNorm mode must be one of {MODES}, got {mode!r}")
    layers = [m for m in module.modules() if isinstance(m, GlobalBatchNorm)]
    for m in layers:
        m.mode = mode
    try:
        yield
    finally:
        for m in layers:
            m.mode = "local"


def _mode(module: nn.Module) -> str:
    return next((m.mode for m in module.modules() if isinstance(m, GlobalBatchNorm)), "local")


def _shuffled(fn: Callable[[torch.Tensor], torch.Tensor], view: torch.Tensor) -> torch.Tensor:
    """`fn` of this rank's `view` computed in a sub-batch drawn at random from the global batch (MoCo's
    shuffling BatchNorm): the ranks gather the view, each runs `fn` on its share of one random
    permutation, and the outputs return to their owners through a differentiable gather, so gradients
    reach the rank that computed them."""
    b, r = view.shape[0], rank()
    inputs = gather_stack(view.detach()).flatten(0, 1)  # augmented inputs carry no gradient
    perm = shared_permutation(inputs.shape[0], inputs.device)
    everyone = gather_with_grad(fn(inputs[perm[r * b : (r + 1) * b]]))  # row j: global sample perm[j]
    return everyone[torch.argsort(perm)[r * b : (r + 1) * b]]


def encode_views(fn: Callable[[torch.Tensor], torch.Tensor], views: list[torch.Tensor], module: nn.Module) -> list[torch.Tensor]:
    """`[fn(v) for v in views]`, where `fn` runs (part of) `module` and treats samples independently
    except through BatchNorm; the views are of the same samples (a method's augmentations).

    - "global" BatchNorm (`synchronise`), views of one shape: one call on the concatenated views whose
      BatchNorm layers normalise each view by its own global statistics: the same values, with one
      collective per layer instead of one per view and layer (docs/benchmarks.md §11).
    - "shuffle": the first view is computed on this rank; every other view in a random sub-batch of
      the global batch, so a sample's views are normalised by statistics of different sets of samples
      (closing, as MoCo does, the leak through shared per-rank statistics that global BatchNorm closes
      in contrastive methods) at the cost of three small collectives per view instead of two per layer.
    - otherwise (one process, per-rank BatchNorm): one call per view.
    """
    mode = _mode(module) if world_size() > 1 else "local"
    if mode == "shuffle":
        return [fn(v) if k == 0 else _shuffled(fn, v) for k, v in enumerate(views)]
    if mode == "local" or len(views) < 2 or any(v.shape != views[0].shape for v in views):
        return [fn(v) for v in views]
    layers = [m for m in module.modules() if isinstance(m, GlobalBatchNorm)]
    for m in layers:
        m.groups = len(views)
    try:
        return list(fn(torch.cat(views)).chunk(len(views)))
    finally:
        for m in layers:
            m.groups = 1


def average_running_stats(module: nn.Module) -> None:
    """Every BatchNorm's running mean and variance := their mean over ranks, in one collective.

    With per-rank statistics ("local", "shuffle") each rank's running estimates follow its own slices,
    so the ranks drift apart; the trainer averages them at the end of every epoch (where checkpoints
    are written by rank 0), so every rank holds the same buffers and a resumed run continues the one
    that was saved. Training steps never read them (BatchNorm normalises by batch statistics there)."""
    if world_size() < 2:
        return
    stats = [t for m in module.modules() if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d)
             for t in (m.running_mean, m.running_var) if t is not None]
    if not stats:
        return
    with torch.no_grad():
        flat = all_reduce_sum(torch.cat([t.reshape(-1).float() for t in stats])).div_(world_size())
        for t, part in zip(stats, flat.split([t.numel() for t in stats]), strict=True):
            t.copy_(part.view_as(t))


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d | nn.SyncBatchNorm) for m in module.modules())


__all__ = ["MODES", "GlobalBatchNorm", "average_running_stats", "convert_batchnorm", "encode_views", "has_batchnorm", "synchronise"]
