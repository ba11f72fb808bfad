"""BatchNorm over the global batch of a data-parallel run, on any device (gloo on CPU included).

torch's `SyncBatchNorm` only runs on GPUs; this one works wherever torch.distributed does: per channel
the ranks' means and sums of squares (and counts) are summed over ranks in one differentiable all_reduce
(`distributed.all_reduce_with_grad`), so the forward and the gradients are those of one BatchNorm over
the concatenated batch of all ranks (up to float rounding: each rank's two-pass mean and variance
are combined in float64).

`convert_batchnorm(module)` swaps every BatchNorm layer for a `GlobalBatchNorm` that shares its
parameters and buffers (state_dict keys, optimiser entries and EMA pairs stay valid). A converted layer
synchronises only while `synchronise(module)` is active (the trainer's steps): outside it, e.g. in a
probe or a protocol that rank 0 runs alone, it is an ordinary BatchNorm and calls no collective.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from ecg_tune.ssl.distributed import all_reduce_with_grad, world_size


class GlobalBatchNorm(nn.BatchNorm1d):
    """A BatchNorm1d (the norm of every 1-D ECG encoder here) whose statistics, while `sync` is set,
    are those of the global batch."""

    sync: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        if not (self.sync and batch_stats and world_size() > 1):
            return super().forward(x)
        if x.dim() not in (2, 3):
            raise ValueError(f"expected 2-D or 3-D input (batch, channels[, time]), got {x.dim()}-D")
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        xf = x.float()
        # Each rank's exact two-pass statistics, combined in float64 (Chan et al.): n·m and M2 + n·m²
        # summed over ranks give the global mean and variance without E[x²] − E[x]² cancellation.
        local_var, local_mean = torch.var_mean(xf, dim=dims, correction=0)
        n_local = x.numel() / c
        m = local_mean.double()
        count = torch.full((1,), n_local, dtype=torch.float64, device=x.device)
        stats = all_reduce_with_grad(torch.cat([m * n_local, (local_var.double() + m * m) * n_local, count]))
        n = stats[-1].detach()
        mean64 = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean64 * mean64).clamp(min=0).float()
        mean = mean64.float()
        if self.training and self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                assert self.num_batches_tracked is not None
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var.detach() * (n / (n - 1).clamp(min=1))
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), factor)
                assert self.running_var is not None
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        shape = (1, c) + (1,) * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


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


@contextlib.contextmanager
def synchronise(module: nn.Module, enabled: bool = True) -> Iterator[None]:
    """While active, the `GlobalBatchNorm` layers of `module` use global batch statistics."""
    layers = [m for m in module.modules() if isinstance(m, GlobalBatchNorm)] if enabled else []
    for m in layers:
        m.sync = True
    try:
        yield
    finally:
        for m in layers:
            m.sync = False


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d | nn.SyncBatchNorm) for m in module.modules())


__all__ = ["GlobalBatchNorm", "convert_batchnorm", "has_batchnorm", "synchronise"]
