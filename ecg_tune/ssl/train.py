"""The training loop: a plain PyTorch loop around a `Method`, resumable bit for bit.

One epoch = the batches of `WindowBatches.epoch(epoch)`; each step augments on the device, calls
`method.training_step`, backpropagates (under autocast / GradScaler as configured), clips, steps the
optimiser and the per-step schedule, then calls `method.on_step_end`. Randomness has four sources, all
seeded from the trial seed and all saved by `save()`: the loader (a pure function of (seed, epoch), so
nothing to save), the augmentation generator (its own `torch.Generator` on the device), torch's default
generators (methods draw from them, e.g. CPC negatives, dropout) and numpy/python's global generators
(saved in case a method uses them). Checkpoints are taken at epoch boundaries, so `restore()` followed
by `fit()` continues exactly as an uninterrupted run would (bit-identical on CPU; GPU kernels may be
non-deterministic).

Data-parallel: when a torch.distributed process group is up, the same loop trains with the semantics
of the global batch (`ssl/parallel.py`: sharded batches, one seeded augmentation plan, averaged
gradients, global BatchNorm where the method asks for it, rank 0 writes checkpoints).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ecg_tune.config import OptimConfig, TrainConfig, TrialConfig
from ecg_tune.data.store import SignalStore
from ecg_tune.data.stream import StreamSource
from ecg_tune.errors import CheckpointError, ConfigError
from ecg_tune.ssl.augment.base import Pipeline
from ecg_tune.ssl.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from ecg_tune.ssl.distributed import average_gradients
from ecg_tune.ssl.global_batchnorm import average_running_stats, synchronise
from ecg_tune.ssl.loader import WindowBatches
from ecg_tune.ssl.methods.base import Method
from ecg_tune.ssl.optim import build_optimizer, build_scheduler, is_decayed, weight_decay_at
from ecg_tune.ssl.parallel import (
    Parallel,
    ShardedAugment,
    augment_seed,
    gather_rank_rng,
    global_seed,
    mean_over_ranks,
    prepare_method,
    reseed_rank,
)
from ecg_tune.ssl.stream_loader import StreamBatches
from ecg_tune.ssl.train_build import trainer_parts
from ecg_tune.ssl.train_setup import (  # noqa: F401  (public names, importable from here as before)
    PRECISIONS,
    TrainingDiverged,
    build_trial_method,
    compile_unavailable,
    default_device,
    derived_seed,
    fits_on_device,
    method_name,
    progress_bar,
    resolve_precision,
    rng_state,
    set_rng_state,
    with_n_classes,
)

# Header keys written by save(); everything else in a header is the caller's description of the run.
_PROGRESS_KEYS = ("format", "format_version", "package_version", "created", "epoch", "step", "metrics")

Callback = Callable[["Trainer", dict[str, float]], bool | None]


class Trainer:
    """Trains `method` on `batches`; `epoch` = completed epochs, `step` = completed optimiser steps.

    The learning-rate schedule and the methods' step-based schedules (BYOL's EMA) are planned for
    `train_cfg.epochs`; `fit(epochs)` beyond that continues at the schedule's end value.

    `train_cfg.compile` compiles the method's encoders with `torch.compile` (inductor) on any device,
    CPU included: the online encoder and, for BYOL, the target encoder. Compilation is in place
    (`Module.compile()`), so parameter names, `state_dict()` keys and checkpoints are those of the
    uncompiled encoder, and `copy.deepcopy` / pickling give an uncompiled copy. The first step pays the
    compilation (about a minute for an xresnet1d50 on 2 cold CPU cores); later steps give the eager
    results up to float rounding, not bit for bit. nn.LSTM layers are not traced (dynamo runs them
    eagerly between compiled parts). CPC is left uncompiled, with a warning: its training step calls the encoder's
    `forward_local` / `forward_context`, which a compiled `forward` does not cover. If the machine
    cannot build inductor's kernels (no C/C++ compiler or no Python headers), construction raises a
    ConfigError for `train.compile` rather than falling back to eager: the request was explicit, and
    an error at start is cheaper than a sweep that silently runs slower than it was sized for.
    """

    def __init__(
        self,
        method: Method,
        augment_pipeline: Pipeline,
        optim_cfg: OptimConfig,
        train_cfg: TrainConfig,
        batches: WindowBatches | StreamBatches,
        *,
        device: str | torch.device,
        seed: int,
        header: dict[str, Any],
        progress: bool = False,
        augment_shards: int = 1,
    ):
        self.device = torch.device(device)
        self.seed = int(seed)
        # Data-parallel when a process group is up (ssl/parallel.py); rank 0 of 1 otherwise.
        self.parallel = Parallel.current()
        r = self.parallel.rank
        # The global streams methods may draw from during training (torch's seeds CUDA too). They are
        # process-wide, so seeding them here is what makes two runs with one seed identical.
        torch.manual_seed(global_seed(self.seed, r))
        np.random.seed(derived_seed(self.seed, 2, *((r,) if r else ())) % 2**32)
        random.seed(derived_seed(self.seed, 3, *((r,) if r else ())))
        self.batchnorm_mode = prepare_method(method, self.parallel, train_cfg.sync_batchnorm)
        self.method = method.to(self.device)
        self.augment = augment_pipeline.to(self.device)
        self.optim_cfg, self.train_cfg = optim_cfg, train_cfg
        self.batches = batches
        self.header = dict(header)
        self.progress = progress
        self.epoch = 0
        self.step = 0
        self.history: list[dict[str, float]] = []

        self.steps_per_epoch = len(batches)
        self.total_steps = train_cfg.epochs * self.steps_per_epoch
        self.optimizer = build_optimizer(self.method, optim_cfg)
        self.scheduler = build_scheduler(
            self.optimizer, optim_cfg, steps_per_epoch=self.steps_per_epoch, total_steps=self.total_steps
        )
        self.precision = resolve_precision(train_cfg.precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        # One seeded plan: shard s of the global batch has its own generator (see ssl/parallel.py).
        if augment_shards < 1:
            raise ValueError(f"augment_shards must be >= 1, got {augment_shards}")
        self.augment_shards = [r * augment_shards + i for i in range(augment_shards)]
        self.generators = [torch.Generator(device=self.device) for _ in self.augment_shards]
        for g, shard in zip(self.generators, self.augment_shards):
            g.manual_seed(augment_seed(self.seed, shard))
        self.generator = self.generators[0]
        self._started = False
        if train_cfg.compile:
            self._compile()

    # --- construction ---------------------------------------------------------------------------------

    @classmethod
    def from_config(
        cls,
        cfg: TrialConfig,
        store: SignalStore | StreamSource,
        indices: Sequence[int] | np.ndarray,
        *,
        lead_names: Sequence[str],
        normalization: tuple[Sequence[float], Sequence[float]] | None = None,
        targets: np.ndarray | None = None,
        label_vocabulary: Sequence[str] | None = None,
        device: str | torch.device | None = None,
        progress: bool = False,
        augment_shards: int = 1,
        groups: np.ndarray | None = None,
    ) -> Trainer:
        """Build everything from a trial config.

        `lead_names` are the leads the model sees, in order (a subset of `store.lead_names`);
        `normalization` is `(mean, std)` for those leads; `targets` and `groups` (patient ids as
        integers, for methods that ask: `Method.needs_groups`) are aligned with `indices`.
        """
        device = torch.device(device) if device is not None else default_device()
        method, pipeline, batches, header = trainer_parts(
            cfg, store, indices, lead_names=lead_names, normalization=normalization, targets=targets,
            label_vocabulary=label_vocabulary, device=device, groups=groups,
        )
        return cls(
            method, pipeline, cfg.optim, cfg.train, batches, device=device, seed=cfg.seed, header=header,
            progress=progress, augment_shards=augment_shards,
        )

    @classmethod
    def restore(
        cls,
        path: str | os.PathLike[str],
        store: SignalStore | StreamSource,
        indices: Sequence[int] | np.ndarray,
        *,
        device: str | torch.device | None = None,
        targets: np.ndarray | None = None,
        progress: bool = False,
        groups: np.ndarray | None = None,
    ) -> Trainer:
        """A trainer that continues exactly where the checkpoint at `path` (written by `save`) stopped."""
        ckpt = load_checkpoint(path)
        header = ckpt.header
        if "config" not in header or ckpt.is_encoder_only:
            raise CheckpointError(f"{path}: not a training checkpoint (no config or no method/optimizer state)")
        pre = header["preprocessing"]
        if float(pre["fs"]) != float(store.fs):
            raise CheckpointError(f"{path}: trained at {pre['fs']} Hz, the data is at {store.fs} Hz")
        norm = pre.get("normalization")
        trainer = cls.from_config(
            TrialConfig.from_flat(header["config"]),
            store,
            indices,
            lead_names=pre["lead_names"],
            normalization=(norm["mean"], norm["std"]) if norm else None,
            targets=targets,
            label_vocabulary=header.get("label_vocabulary"),
            device=device,
            progress=progress,
            groups=groups,
        )
        trainer.header = {k: v for k, v in header.items() if k not in _PROGRESS_KEYS}
        trainer.load_state(ckpt)
        return trainer

    def _compile(self) -> None:
        """`train.compile` (see the class docstring): compile the method's encoders in place."""
        if self.method.compile_unsupported:
            warnings.warn(
                f"train.compile is ignored for method {method_name(self.method)}: "
                f"{self.method.compile_unsupported}",
                stacklevel=3,
            )
            return
        reason = compile_unavailable(str(self.device))
        if reason is not None:
            raise ConfigError(
                "train.compile",
                f"torch.compile cannot build kernels for {self.device} on this machine ({reason}); install "
                "a C/C++ compiler and the Python headers (Debian: g++ python3-dev) or set train.compile=false",
            )
        for encoder in self.method.compile_targets():
            # In place: parameter names (and so checkpoints) stay those of the uncompiled encoder.
            encoder.compile()

    # --- training ---------------------------------------------------------------------------------------

    def _start(self) -> None:
        if not self._started:
            self.method.on_train_start(self.total_steps, self.steps_per_epoch)
            self._started = True

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _check_finite(self, step: int, loss: torch.Tensor) -> None:
        if not bool(torch.isfinite(loss)):
            raise TrainingDiverged(self.epoch + 1, step, float(loss))  # 1-based, like metrics["epoch"]

    def _step_schedule(self) -> None:
        if not self.scaler.is_enabled():
            self.scheduler.step()
            return
        # GradScaler skips optimiser steps whose gradients overflowed; the schedule still advances so
        # that the lr stays a function of the step count (what the closed form and resumes assume).
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before"))
            self.scheduler.step()

    def train_epoch(self) -> dict[str, float]:
        """One epoch; returns mean loss and method metrics, lr (of the last step), time and windows/s."""
        self._start()
        self.method.train()
        self.augment.train()
        self.method.on_epoch_start(self.epoch)
        augment = ShardedAugment(self.augment, self.generators)
        clip = self.optim_cfg.grad_clip
        sums: dict[str, torch.Tensor] = {}
        n_steps = n_windows = 0
        lr = float("nan")
        pending: tuple[int, torch.Tensor] | None = None
        started = time.perf_counter()
        with synchronise(self.method, self.batchnorm_mode):
            for batch in self.batches.epoch(self.epoch):
                lr, loss, metrics = self._train_step(batch, augment, clip)
                # The previous step's loss is checked now, when the device has long computed it: checking
                # the current one would stall the host on every step until the device catches up.
                if pending is not None:
                    self._check_finite(*pending)
                pending = (self.step, loss)
                for key, value in {**metrics, "loss": loss}.items():
                    value = torch.as_tensor(value).detach().float().to(self.device)
                    sums[key] = sums[key] + value if key in sums else value
                n_steps += 1
                n_windows += batch.x.shape[0] * self.parallel.world
        if pending is not None:
            self._check_finite(*pending)
        if self.batchnorm_mode != "global":  # per-rank running statistics (a no-op in one process)
            average_running_stats(self.method)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # honest epoch time
        elapsed = time.perf_counter() - started

        self.epoch += 1
        stacked = torch.stack(list(sums.values())).div(max(n_steps, 1)) if sums else torch.zeros(0)
        means = mean_over_ranks(stacked, self.parallel).tolist()  # the global batch's metrics on every rank
        result = {"epoch": float(self.epoch), "step": float(self.step)}
        result.update(zip(sums, means))
        result.update(lr=lr, epoch_time_s=elapsed, windows_per_s=n_windows / elapsed if elapsed > 0 else 0.0)
        self.history.append(result)
        return result

    def _train_step(
        self, batch: Any, augment: Callable[[torch.Tensor], torch.Tensor], clip: float
    ) -> tuple[float, torch.Tensor, dict[str, torch.Tensor]]:
        """One optimiser step: (lr used, detached loss of the global batch, the method's metrics)."""
        with self._autocast():
            loss, metrics = self.method.training_step(batch, augment)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        loss = loss.detach().float()
        if self.parallel.active:  # mean gradients (and loss) over ranks, in one collective
            averaged = average_gradients(self.method.parameters(), loss)
            assert averaged is not None  # given `extra`, the mean loss comes back
            loss = averaged
        if clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.method.parameters(), clip)
        lr = self.optimizer.param_groups[0]["lr"]
        if self.optim_cfg.weight_decay_end >= 0:  # a weight-decay schedule: a function of the step, as the lr
            wd = weight_decay_at(self.step, self.optim_cfg, self.total_steps)
            for group in self.optimizer.param_groups:
                if is_decayed(group):
                    group["weight_decay"] = wd
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self._step_schedule()
        self.step += 1
        self.method.on_step_end(self.step, self.total_steps)
        return lr, loss, metrics

    def fit(self, epochs: int | None = None, callback: Callback | None = None) -> list[dict[str, float]]:
        """Train until `epochs` epochs are completed in total (default `train_cfg.epochs`).

        `callback(trainer, metrics)` runs after every epoch; returning True stops training. A restored
        trainer continues counting from its checkpoint's epoch. Returns the history of all epochs.
        """
        target = self.train_cfg.epochs if epochs is None else int(epochs)
        with progress_bar(self.progress, self.epoch, target) as advance:
            while self.epoch < target:
                metrics = self.train_epoch()
                advance(metrics)
                if callback is not None and callback(self, metrics):
                    break
        return self.history

    # --- checkpoints -----------------------------------------------------------------------------------

    def checkpoint_header(self) -> dict[str, Any]:
        return {**self.header, "epoch": self.epoch, "step": self.step, "metrics": self.history[-1] if self.history else {}}

    def state(self) -> dict[str, Any]:
        """Everything `load_state` needs. Collective in a data-parallel run (every rank's generator
        states are gathered: call it on all ranks)."""
        own = self._rng_state()
        ranks = gather_rank_rng(self.parallel, lambda: own)
        return {
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "trainer": {"epoch": self.epoch, "step": self.step, "seed": self.seed, "history": self.history},
            "rng": own,
            **({"rank_rng": ranks} if ranks is not None else {}),
            **({"stream": self.batches.state()} if isinstance(self.batches, StreamBatches) else {}),
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Atomically write everything needed to continue exactly (call between epochs). In a
        data-parallel run every rank calls it (it gathers the ranks' generator states) and rank 0 writes."""
        state = self.state()
        if self.parallel.is_main:
            save_checkpoint(path, self.checkpoint_header(), state)

    def load_state(self, source: Checkpoint | str | os.PathLike[str]) -> None:
        """Continue from a checkpoint written by `save` of a trainer built the same way."""
        ckpt = source if isinstance(source, Checkpoint) else load_checkpoint(source)
        states = ckpt.states
        if "optimizer" not in states:
            raise CheckpointError(f"{ckpt.path}: not a training checkpoint (no optimizer state)")
        # on_train_start first: a method may size or create state there that load_state_dict then fills.
        self._start()
        try:
            self.method.load_state_dict(states["method"])
            self.optimizer.load_state_dict(states["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{ckpt.path}: does not fit this trainer's method/optimizer: {e}") from e
        self.scheduler.load_state_dict(states["scheduler"])
        if states["scaler"]:  # empty when the run did not use fp16
            self.scaler.load_state_dict(states["scaler"])
        trainer = states["trainer"]
        self.epoch, self.step = int(trainer["epoch"]), int(trainer["step"])
        self.history = [dict(m) for m in trainer["history"]]
        ranks = states.get("rank_rng")
        if ranks is not None and len(ranks) == self.parallel.world:
            self._set_rng_state(ranks[self.parallel.rank])
        elif self.parallel.is_main:
            self._set_rng_state(states["rng"])
        else:  # a new rank (the number of workers changed): fresh streams, a function of (seed, rank, epoch)
            reseed_rank(self.seed, self.parallel, self.epoch)
            for g, shard in zip(self.generators, self.augment_shards):
                g.manual_seed(augment_seed(self.seed, shard, self.epoch))
        if isinstance(self.batches, StreamBatches):  # the stream position (a checkpoint without one: epoch start)
            self.batches.load_state(states.get("stream", {"epoch": self.epoch, "batch": 0}))

    def _rng_state(self) -> dict[str, Any]:
        return rng_state(self.generators)

    def _set_rng_state(self, rng: dict[str, Any]) -> None:
        reseed = [augment_seed(self.seed, shard, self.epoch) for shard in self.augment_shards]
        set_rng_state(rng, self.generators, reseed, self.device)
