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
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
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
from ecg_tune.errors import CheckpointError, ConfigError, EcgTuneError
from ecg_tune.ssl.augment import build_pipeline
from ecg_tune.ssl.augment.base import Pipeline
from ecg_tune.ssl.checkpoint import Checkpoint, load_checkpoint, run_header, save_checkpoint
from ecg_tune.ssl.encoders import build_encoder
from ecg_tune.ssl.loader import WindowBatches
from ecg_tune.ssl.methods import METHODS, build_method
from ecg_tune.ssl.methods.base import Method
from ecg_tune.ssl.optim import build_optimizer, build_scheduler
from ecg_tune.ssl.stream_loader import StreamBatches

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Header keys written by save(); everything else in a header is the caller's description of the run.
_PROGRESS_KEYS = ("format", "format_version", "package_version", "created", "epoch", "step", "metrics")
# Above this share of free GPU memory the store stays on the host (batches are then copied per step).
_RESIDENT_MAX_FRACTION = 0.25

Callback = Callable[["Trainer", dict[str, float]], bool | None]


class TrainingDiverged(EcgTuneError):
    """The loss became NaN or infinite; the run cannot continue from here."""

    def __init__(self, epoch: int, step: int, loss: float):
        self.epoch, self.step, self.loss = epoch, step, loss
        super().__init__(
            f"training diverged at epoch {epoch}, step {step}: loss is {loss}; "
            "lower optim.lr, set optim.grad_clip or use precision fp32/bf16"
        )


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise ConfigError("train.precision", f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _derived_seed(seed: int, *stream: int) -> int:
    # Independent streams from one trial seed (SeedSequence mixes well, unlike seed + k).
    return int(np.random.SeedSequence([seed, *stream]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _compile_probe(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(x) * 2.0 + 1.0  # one pointwise kernel: enough to exercise the whole toolchain


@functools.cache
def compile_unavailable(device: str) -> str | None:
    """Why torch.compile's default backend (inductor) cannot build kernels for `device` here, or None.

    Inductor generates C++ (CPU) or Triton (CUDA) kernels and builds them with the machine's compiler
    and Python's headers; without them it fails only at a model's first call. Compiling one tiny
    function finds that out up front (about a second once torch.compile is warm; cached per device).
    """
    try:
        torch.compile(_compile_probe)(torch.ones(4, device=device))
    except Exception as e:  # InductorError (InvalidCxxCompiler, missing Python.h, ...), Triton errors
        inner = getattr(e, "inner_exception", None) or e
        first = next((line.strip() for line in str(inner).splitlines() if line.strip()), "")
        return f"{type(inner).__name__}: {first}"
    return None


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
    ):
        self.device = torch.device(device)
        self.seed = int(seed)
        # The global streams methods may draw from during training (torch's seeds CUDA too). They are
        # process-wide, so seeding them here is what makes two runs with one seed identical.
        torch.manual_seed(self.seed)
        np.random.seed(_derived_seed(self.seed, 2) % 2**32)
        random.seed(_derived_seed(self.seed, 3))
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
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(_derived_seed(self.seed, 1))
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
    ) -> Trainer:
        """Build everything from a trial config.

        `lead_names` are the leads the model sees, in order (a subset of `store.lead_names`);
        `normalization` is `(mean, std)` for those leads; `targets` are aligned with `indices`.
        """
        device = torch.device(device) if device is not None else default_device()
        lead_names = list(lead_names)
        missing = [name for name in lead_names if name not in store.lead_names]
        if missing or not lead_names:
            raise ConfigError("data.leads", f"leads {missing or '(none)'} are not in the store's {list(store.lead_names)}")
        lead_indices = None if tuple(lead_names) == tuple(store.lead_names) else [store.lead_names.index(n) for n in lead_names]
        method_params = dict(cfg.method.params)
        if label_vocabulary is not None:
            method_params = _with_n_classes(cfg.method.name, method_params, len(label_vocabulary))

        method = _build_method(cfg, method_params, len(lead_names), cfg.data.window)
        window = method.window_length(cfg.data.window)
        if window != cfg.data.window:  # e.g. CPC trains on whole records: rebuild for that input length
            method = _build_method(cfg, method_params, len(lead_names), window)
        if method.needs_labels and targets is None:
            raise ConfigError("method.name", f"method {cfg.method.name!r} trains on labels; no targets were given")

        pipeline = build_pipeline(cfg.augment.pipeline, cfg.augment.params, store.fs)
        batches: WindowBatches | StreamBatches
        if isinstance(store, StreamSource):  # data.mode stream: `indices` are unused (the source holds its masks)
            if method.needs_labels:
                raise ConfigError("data.mode", f"method {cfg.method.name!r} trains on labels; use data.mode=memory")
            batches = StreamBatches(
                store, window=window, batch_size=cfg.train.batch_size, seed=cfg.seed, device=device,
                normalization=normalization, lead_indices=lead_indices, steps_per_epoch=cfg.train.steps_per_epoch,
            )
        else:
            batches = WindowBatches(
                store,
                indices,
                window=window,
                batch_size=cfg.train.batch_size,
                seed=cfg.seed,
                targets=targets if method.needs_labels else None,
                device=device,
                normalization=normalization,
                lead_indices=lead_indices,
                resident=_fits_on_device(store, device),
                steps_per_epoch=cfg.train.steps_per_epoch,
            )
        header = run_header(
            cfg, method, store.fs, window, lead_names, normalization, label_vocabulary=label_vocabulary
        )
        return cls(
            method, pipeline, cfg.optim, cfg.train, batches, device=device, seed=cfg.seed, header=header, progress=progress
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
        )
        trainer.header = {k: v for k, v in header.items() if k not in _PROGRESS_KEYS}
        trainer.load_state(ckpt)
        return trainer

    def _compile(self) -> None:
        """`train.compile` (see the class docstring): compile the method's encoders in place."""
        if self.method.compile_unsupported:
            warnings.warn(
                f"train.compile is ignored for method {_method_name(self.method)}: "
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
        augment = functools.partial(self.augment, generator=self.generator)
        clip = self.optim_cfg.grad_clip
        sums: dict[str, torch.Tensor] = {}
        n_steps = n_windows = 0
        lr = float("nan")
        pending: tuple[int, torch.Tensor] | None = None
        started = time.perf_counter()
        for batch in self.batches.epoch(self.epoch):
            with self._autocast():
                loss, metrics = self.method.training_step(batch, augment)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.method.parameters(), clip)
            lr = self.optimizer.param_groups[0]["lr"]
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self._step_schedule()
            self.step += 1
            self.method.on_step_end(self.step, self.total_steps)

            loss = loss.detach().float()
            # The previous step's loss is checked now, when the device has long computed it: checking
            # the current one would stall the host on every step until the device catches up.
            if pending is not None:
                self._check_finite(*pending)
            pending = (self.step, loss)
            for key, value in {**metrics, "loss": loss}.items():
                value = torch.as_tensor(value).detach().float().to(self.device)
                sums[key] = sums[key] + value if key in sums else value
            n_steps += 1
            n_windows += batch.x.shape[0]
        if pending is not None:
            self._check_finite(*pending)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # honest epoch time
        elapsed = time.perf_counter() - started

        self.epoch += 1
        means = torch.stack(list(sums.values())).div(max(n_steps, 1)).tolist() if sums else []
        result = {"epoch": float(self.epoch), "step": float(self.step)}
        result.update(zip(sums, means))
        result.update(lr=lr, epoch_time_s=elapsed, windows_per_s=n_windows / elapsed if elapsed > 0 else 0.0)
        self.history.append(result)
        return result

    def fit(self, epochs: int | None = None, callback: Callback | None = None) -> list[dict[str, float]]:
        """Train until `epochs` epochs are completed in total (default `train_cfg.epochs`).

        `callback(trainer, metrics)` runs after every epoch; returning True stops training. A restored
        trainer continues counting from its checkpoint's epoch. Returns the history of all epochs.
        """
        target = self.train_cfg.epochs if epochs is None else int(epochs)
        with _progress_bar(self.progress, self.epoch, target) as advance:
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
        return {
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "trainer": {"epoch": self.epoch, "step": self.step, "seed": self.seed, "history": self.history},
            "rng": self._rng_state(),
            **({"stream": self.batches.state()} if isinstance(self.batches, StreamBatches) else {}),
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Atomically write everything needed to continue exactly (call between epochs)."""
        save_checkpoint(path, self.checkpoint_header(), self.state())

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
        self._set_rng_state(states["rng"])
        if isinstance(self.batches, StreamBatches):  # the stream position (a checkpoint without one: epoch start)
            self.batches.load_state(states.get("stream", {"epoch": self.epoch, "batch": 0}))

    def _rng_state(self) -> dict[str, Any]:
        np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
        py_version, py_state, py_gauss = random.getstate()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "augment": self.generator.get_state(),
            # weights_only loading accepts tensors and plain python, not numpy arrays: convert.
            "numpy": {
                "name": np_name,
                "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
                "pos": np_pos,
                "has_gauss": np_has_gauss,
                "gauss": np_gauss,
            },
            "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
        }

    def _set_rng_state(self, rng: dict[str, Any]) -> None:
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])
        augment = rng["augment"]
        if augment.numel() == self.generator.get_state().numel():
            self.generator.set_state(augment)
        else:
            # Saved by a generator of another device type (CUDA's Philox state is 16 bytes, the CPU's
            # Mersenne Twister 5056): it cannot continue that stream, so it takes a fresh one that is a
            # function of (seed, epoch), and the run goes on, deterministic but not bit-identical.
            warnings.warn(
                f"the checkpoint's augmentation generator state is from another device type than "
                f"{self.device.type}; augmentations continue from a fresh stream (seed {self.seed}, "
                f"epoch {self.epoch})",
                stacklevel=3,
            )
            self.generator.manual_seed(_derived_seed(self.seed, 1, self.epoch))
        n = rng["numpy"]
        np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        p = rng["python"]
        random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


# --- helpers -------------------------------------------------------------------------------------------


def _build_method(cfg: TrialConfig, method_params: dict[str, Any], n_leads: int, window: int) -> Method:
    torch.manual_seed(cfg.seed)  # weight initialisation is part of the trial's seed
    encoder = build_encoder(cfg.encoder.name, cfg.encoder.params, n_leads, window)
    return build_method(cfg.method.name, method_params, encoder)


def _method_name(method: Method) -> str:
    """The registry name of `method`'s class (its class name when it is not registered)."""
    target = f"{type(method).__module__}:{type(method).__qualname__}"
    return next((n for n in METHODS if METHODS.target(n) == target), type(method).__name__)


def _with_n_classes(method_name: str, params: dict[str, Any], n_classes: int) -> dict[str, Any]:
    """Supervised heads are sized by the label vocabulary; a conflicting explicit value is an error."""
    fields = {f.name for f in dataclasses.fields(METHODS[method_name].Params)}
    if "n_classes" not in fields:
        return params
    if "n_classes" in params and int(params["n_classes"]) != n_classes:
        raise ConfigError("method.n_classes", f"{params['n_classes']} differs from the {n_classes} labels of the label set")
    return {**params, "n_classes": n_classes}


def _fits_on_device(store: SignalStore, device: torch.device) -> bool:
    """Keep the store on the GPU (gather there) when it takes a small share of free memory."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return store.nbytes < _RESIDENT_MAX_FRACTION * free


@contextlib.contextmanager
def _progress_bar(enabled: bool, done: int, total: int) -> Any:
    """Yields `advance(metrics)`; a rich progress bar over epochs when enabled, else a no-op."""
    if not enabled:
        yield lambda metrics: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("epochs", total=total, completed=done)

        def advance(metrics: dict[str, float]) -> None:
            bar.update(task, advance=1, description=f"epoch {int(metrics['epoch'])} loss {metrics['loss']:.4f}")

        yield advance
