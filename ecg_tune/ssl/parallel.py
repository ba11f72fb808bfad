"""Data-parallel training over a plain torch.distributed process group (gloo on CPU, NCCL on GPUs).

The ssl layer never starts processes or talks to Ray: when the default process group is initialised
(by Ray Train's TorchTrainer in a sweep or `ecg-tune pretrain --workers N`, by `torch.multiprocessing`
in tests), the trainer trains with the semantics of the global batch:

* `train.batch_size` is the global batch; rank r trains on rows [r·B, (r+1)·B) of it, B = batch/world.
  Every rank draws the same global batch (records, window starts) from `(seed, epoch)`
  (`WindowBatches(shard=...)`); streaming sources read disjoint parts (`Part(rank, world_size)`).
* One seeded plan for the augmentations: shard s of the global batch is augmented by its own generator
  seeded `augment_seed(seed, s)`. Rank r owns shard r; one process with `augment_shards=N` owns all N
  shards and so sees exactly the draws of N ranks (what the equivalence tests use). Torch's global
  generator (CPC negatives, MAE/JEPA masks, dropout) is seeded per rank (`global_seed`).
* Gradients are averaged over ranks after backward in one flat all_reduce (`average_gradients`), which
  also carries the step's loss, so every rank sees the same global loss (and stops together on a NaN).
  With the losses' gathers (NT-Xent, CMSC, Sinkhorn) the update is the one-process update on the
  global batch; EMA targets (BYOL, JEPA) stay identical because every rank applies the same update.
* BatchNorm: where `Method.sync_batchnorm` is set (or `train.sync_batchnorm: on`), BatchNorm layers become `GlobalBatchNorm`
  (statistics over the global batch during training steps); `train.sync_batchnorm: shuffle` keeps them
  per rank and normalises a sample's second view in a random sub-batch (`global_batchnorm.encode_views`).
  Per-rank running statistics are averaged over ranks at every epoch end (`average_running_stats`).
* Epoch metrics are means over ranks; checkpoints are written by rank 0 and hold every rank's random
  generator states, so a resumed run with the same number of workers continues every rank's streams.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from ecg_tune.errors import ConfigError
from ecg_tune.ssl.augment.base import Pipeline
from ecg_tune.ssl.distributed import all_gather_object, broadcast_module, rank, world_size
from ecg_tune.ssl.global_batchnorm import convert_batchnorm
from ecg_tune.ssl.methods.base import Method
from ecg_tune.ssl.train_setup import derived_seed


@dataclasses.dataclass(frozen=True)
class Parallel:
    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> Parallel:
        """This process's place in the default process group (rank 0 of 1 without one)."""
        return cls(rank(), world_size())

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def augment_seed(seed: int, shard: int, epoch: int | None = None) -> int:
    """The seed of augmentation shard `shard` (shard 0 is a single process's generator, as ever);
    with `epoch`, the fresh stream taken when a saved state cannot continue."""
    stream = (1,) if epoch is None else (1, epoch)
    return derived_seed(seed, *stream) if shard == 0 else derived_seed(seed, *stream, 1000 + shard)


def global_seed(seed: int, rank_: int) -> int:
    """torch's global seed on rank `rank_` (rank 0: the trial seed itself, as one process)."""
    return seed if rank_ == 0 else derived_seed(seed, 4, rank_)


class ShardedAugment:
    """`pipeline` applied to each of `len(generators)` equal row chunks of the batch with its own
    generator (one chunk: the pipeline itself)."""

    def __init__(self, pipeline: Pipeline, generators: list[torch.Generator]):
        self.pipeline, self.generators = pipeline, generators

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n = len(self.generators)
        if n == 1:
            return self.pipeline(x, generator=self.generators[0])
        if x.shape[0] % n:
            raise ValueError(f"a batch of {x.shape[0]} does not split into {n} augmentation shards")
        return torch.cat([self.pipeline(c, generator=g) for c, g in zip(x.chunk(n), self.generators)])


def prepare_method(method: Method, parallel: Parallel, sync_batchnorm: str = "auto") -> str:
    """Rank 0's weights on every rank, and the BatchNorm mode of the trainer's steps (`synchronise`):
    "global" where the method asks for it (`train.sync_batchnorm` auto) or the config says so (on),
    "shuffle" where the config says so, else "local" (off, a per-sample method, one process)."""
    if not parallel.active:
        return "local"
    mode = {"on": "global", "off": "local", "shuffle": "shuffle"}.get(
        sync_batchnorm, "global" if method.sync_batchnorm else "local")
    if mode == "shuffle" and not method.shuffles_views:
        raise ConfigError("train.sync_batchnorm", f"shuffle needs a method that encodes its views one by one "
                                                  f"(simclr, byol); {type(method).__name__} concatenates them: use on or off")
    if mode != "local":
        convert_batchnorm(method)
    broadcast_module(method)
    return mode


def shard_stream(store: Any, parallel: Parallel) -> Any:
    """A copy of a streaming source that reads this rank's part of every epoch."""
    if not parallel.active:
        return store
    out = copy.copy(store)
    out.part = dataclasses.replace(store.part, rank=parallel.rank, world_size=parallel.world)
    return out


def local_batch_size(batch_size: int, parallel: Parallel) -> int:
    if batch_size % parallel.world:
        raise ConfigError("train.batch_size", f"the global batch {batch_size} must be a multiple of the {parallel.world} workers")
    return batch_size // parallel.world


def gather_rank_rng(parallel: Parallel, own: Callable[[], dict[str, Any]]) -> list[dict[str, Any]] | None:
    """Every rank's generator states (rank order), for rank 0's checkpoint; None in one process."""
    return all_gather_object(own()) if parallel.active else None


def reseed_rank(seed: int, parallel: Parallel, epoch: int) -> None:
    """torch's global generator for a rank whose saved state is missing (the number of workers changed)."""
    torch.manual_seed(derived_seed(global_seed(seed, parallel.rank), 5, epoch))


def mean_over_ranks(values: torch.Tensor, parallel: Parallel) -> torch.Tensor:
    if not parallel.active or values.numel() == 0:
        return values
    import torch.distributed as dist

    out = values.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / parallel.world
